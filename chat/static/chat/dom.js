// dom.js: build elements with text only. There is no way to pass HTML through here: strings
// become text nodes or textContent, and `style`, `on…` and HTML properties are refused.

const FORBIDDEN = /^(on|style$|innerhtml$|outerhtml$|srcdoc$)/i;

/**
 * `el("li", {class: "message", dataset: {id: 4}, text: "hi"}, child…)`: an element with
 * attributes (`true` sets an empty one; false, null and undefined set none), `text` as its
 * textContent, and children (nodes, or strings as text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (FORBIDDEN.test(key)) throw new Error(`el(): ${key} is not allowed`);
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

/** The element with this id; fails loudly when the template lacks it. */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node;
}

/** Move `node` before `reference` in `parent`, keeping focus where the browser can. */
export function moveBefore(parent, node, reference) {
  if (node.nextSibling === reference && node.parentNode === parent) return;
  if (typeof parent.moveBefore === "function" && node.parentNode === parent) {
    parent.moveBefore(node, reference);
  } else {
    parent.insertBefore(node, reference);
  }
}
