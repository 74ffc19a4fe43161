// Injected by tests/browser.py into a copy of a page: once the page has loaded, measures what a person
// at this window size would see and writes it as JSON into a pre element (id browser-check), which Chromium's
// --dump-dom prints. Widths are CSS pixels; `width` is the viewport without its scrollbar.
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const describe = (el) => `${el.tagName.toLowerCase()}${el.className ? "." + el.className : ""} "${(el.textContent || "").trim().slice(0, 60)}"`;
  // Inside a box that scrolls or clips horizontally, an element may extend past the page without
  // widening it; that box itself is checked instead.
  const clipped = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== "visible") return true;
    }
    return false;
  };
  const overflow = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.id !== "browser-check" && !clipped(el) && el.getBoundingClientRect().right > width + 0.5) {
      overflow.push(`${describe(el)} ends at x=${Math.round(el.getBoundingClientRect().right)}`);
    }
  }
  const tables = [...document.querySelectorAll("table")].map((t) => {
    const box = t.parentElement.getBoundingClientRect();
    return {
      head: describe(t.querySelector("th") || t),
      width: t.getBoundingClientRect().width,  // the table's own width
      shown: Math.min(box.right, width) - Math.max(box.left, 0),  // what its container shows of it
      scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth,
      min_font_px: Math.min(...[...t.querySelectorAll("th, td")].map((c) => parseFloat(getComputedStyle(c).fontSize))),
    };
  });
  const report = {
    width, scroll_width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
    images: [...document.images].map((i) => ({alt: i.alt, natural_width: i.naturalWidth, complete: i.complete})),
    overflow, tables,
  };
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
