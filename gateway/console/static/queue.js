// The follow-up queue by keyboard: each card is one stop (a roving tabindex), j/k move, x selects, c/s/a/d open
// the work panel of that action for the selected cards (or, with none selected, the card you are on), ? lists
// the keys. Everything here also works without it: tick boxes and the panels are plain form controls.
"use strict";

(function () {
  const list = document.querySelector("[data-queue]");
  const form = document.getElementById("work");
  const keys = document.getElementById("queue-keys");
  const cards = () => [...(list?.querySelectorAll("li.followup") ?? [])];
  const AT = "tp-queue-at";
  const PANELS = { c: "complete", s: "snooze", a: "assign", d: "cancel" };

  function focusCard(index) {
    const all = cards();
    if (!all.length) return null;
    const card = all[Math.max(0, Math.min(index, all.length - 1))];
    for (const other of all) other.tabIndex = other === card ? 0 : -1;
    card.focus();
    card.scrollIntoView({ block: "nearest" });
    return card;
  }

  const current = () => cards().find((c) => c.tabIndex === 0) ?? null;
  const picked = () => cards().filter((c) => c.querySelector("input.pick")?.checked);

  function describeSelection() {
    const label = form?.querySelector("[data-selection]");
    if (!label) return;
    const n = picked().length;
    label.textContent = n
      ? `${n} selected: the actions apply to ${n === 1 ? "it" : "them"}.`
      : "None selected: tick follow-ups, or press a key on one (? lists them).";
    for (const card of cards()) card.classList.toggle("picked", Boolean(card.querySelector("input.pick")?.checked));
  }

  function toggle(card) {
    const box = card?.querySelector("input.pick");
    if (!box) return;
    box.checked = !box.checked;
    describeSelection();
  }

  function openPanel(action) {
    if (!form) return;
    const card = current();
    if (!picked().length && !card) return;
    form.querySelector("[data-current]").value = card?.dataset.followup ?? "";
    for (const d of form.querySelectorAll("details")) d.open = d.dataset.action === action;
    form.querySelector(`details[data-action="${action}"] .panel`)?.querySelector("input, select")?.focus();
  }

  function closePanels() {
    for (const d of form?.querySelectorAll("details") ?? []) d.open = false;
    const card = current();
    if (card) card.focus();
  }

  const typing = (el) => el instanceof HTMLElement && el.closest("input, select, textarea, [contenteditable]");

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (keys?.open) return; // the dialog closes itself on Esc and its button
    const target = event.target;
    if (typing(target)) {
      const panel = target.closest("#work details");
      if (!panel) return;
      if (event.key === "Escape") {
        event.preventDefault();
        closePanels();
      } else if (event.key === "Enter" && !(target instanceof HTMLInputElement && target.classList.contains("pick"))) {
        event.preventDefault(); // the panel's own action, never another's
        panel.querySelector("button[name=action]").click();
      }
      return;
    }
    const onCard = target instanceof HTMLElement && target.matches("li.followup");
    const all = cards();
    const index = onCard ? all.indexOf(target) : all.indexOf(current());
    if (event.key === "?") {
      event.preventDefault();
      keys?.showModal();
    } else if (event.key === "j" || (onCard && event.key === "ArrowDown")) {
      event.preventDefault();
      focusCard(document.activeElement === all[index] ? index + 1 : Math.max(index, 0));
    } else if (event.key === "k" || (onCard && event.key === "ArrowUp")) {
      event.preventDefault();
      focusCard(document.activeElement === all[index] ? index - 1 : Math.max(index, 0));
    } else if (event.key === "x" || (onCard && event.key === " ")) {
      event.preventDefault();
      toggle(onCard ? target : current());
    } else if (PANELS[event.key]) {
      event.preventDefault();
      if (!onCard && !picked().length) focusCard(Math.max(index, 0));
      openPanel(PANELS[event.key]);
    } else if (onCard && (event.key === "Enter" || event.key === "o")) {
      event.preventDefault();
      target.querySelector("a[data-open]")?.click();
    } else if (event.key === "n") {
      const create = document.querySelector("a[href='/queue/new']");
      if (create) create.click();
    } else if (event.key === "Escape" && form?.querySelector("details[open]")) {
      closePanels();
    }
  });

  list?.addEventListener("focusin", (event) => {
    const card = event.target.closest?.("li.followup");
    if (card) for (const other of cards()) other.tabIndex = other === card ? 0 : -1;
  });
  list?.addEventListener("click", (event) => {
    const card = event.target.closest("li.followup");
    if (card && !event.target.closest("a, input")) card.focus();
    if (event.target.closest("input.pick")) describeSelection();
  });

  if (form) {
    const all = form.querySelector("[data-select-all]");
    all.closest("label").hidden = false;
    all.addEventListener("change", () => {
      for (const box of list.querySelectorAll("input.pick")) box.checked = all.checked;
      describeSelection();
    });
    // The one "you are on" is set only by a key (openPanel): a pointer's panel acts on the ticked boxes alone.
    form.addEventListener("submit", () => {
      sessionStorage.setItem(AT, String(Math.max(0, cards().indexOf(picked()[0] ?? current()))));
    });
    describeSelection();
  }

  // A time picked for a snooze means "until that time", whatever the list said.
  const untilAt = form?.querySelector("input[name=until_at]");
  untilAt?.addEventListener("input", () => {
    form.querySelector("select[name=until]").value = "at";
  });

  const help = document.querySelector("[data-keys-open]");
  if (help && keys) {
    help.hidden = false;
    help.addEventListener("click", () => keys.showModal());
  }

  // Back from an action: on the card where the work was, so the next one is a key away.
  const at = sessionStorage.getItem(AT);
  if (at !== null) {
    sessionStorage.removeItem(AT);
    focusCard(Number(at));
  }
})();
