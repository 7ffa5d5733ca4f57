"""What a person would see wrong on a page, measured by the browser: the page scrolls
sideways, a visible element is outside the screen, two controls overlap.

    assert page.evaluate(LAYOUT_PROBLEMS, "main *") == []
"""

from __future__ import annotations

LAYOUT_PROBLEMS = """(selector) => {
  const vw = document.documentElement.clientWidth;
  const out = [];
  const name = el => `${el.tagName.toLowerCase()}#${el.id} "${el.textContent.trim().slice(0, 30)}"`;
  const shown = el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden";
  };
  if (document.documentElement.scrollWidth > vw) {
    out.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
  }
  const all = [...document.querySelectorAll(selector)].filter(shown);
  for (const el of all) {
    const r = el.getBoundingClientRect();
    if (r.left < -0.5 || r.right > vw + 0.5) {
      out.push(`off screen: ${name(el)} ${r.left.toFixed(0)}..${r.right.toFixed(0)} of ${vw}`);
    }
    if (getComputedStyle(el).display === "block" && el.scrollWidth > el.clientWidth + 1) {
      out.push(`cut off: ${name(el)} ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  const controls = all.filter(el => el.matches("input, button, label, h1, p, .badge"));
  for (let i = 0; i < controls.length; i++) {
    for (let j = i + 1; j < controls.length; j++) {
      const a = controls[i].getBoundingClientRect(), b = controls[j].getBoundingClientRect();
      if (controls[i].contains(controls[j]) || controls[j].contains(controls[i])) continue;
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 1 && h > 1) out.push(`overlap: ${name(controls[i])} and ${name(controls[j])}`);
    }
  }
  return out;
}"""
