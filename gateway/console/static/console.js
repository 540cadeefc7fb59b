// Touchpoint console: a little plain JavaScript on top of server-rendered pages. Every piece of HTML it
// inserts comes from the gateway's own templates (escaped there); data is never turned into markup here.
"use strict";

function fragment(html) {
  const t = document.createElement("template");
  t.innerHTML = html;
  return t.content;
}

function liveSearch(form) {
  const input = form.querySelector("input[type=search]");
  const target = document.getElementById("results");
  let timer = null;
  let latest = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = input.value.trim();
      const ticket = ++latest;
      const response = await fetch(form.dataset.liveSearch + "?" + new URLSearchParams({ q }), {
        credentials: "same-origin",
      });
      if (ticket !== latest) return; // an older answer must not overwrite a newer one
      if (response.status === 401) return window.location.assign("/login");
      target.replaceChildren(fragment(await response.text()));
      history.replaceState(null, "", q ? "?" + new URLSearchParams({ q }) : location.pathname);
    }, 180);
  });
}

function timeline(list) {
  const status = document.querySelector("[data-live-status]");
  const known = () => new Set([...list.querySelectorAll("li.item")].map((li) => li.dataset.id));

  // Newest first, by when it happened (open follow-ups are not history: they stand in "Upcoming").
  function placeByTime(li) {
    const at = Date.parse(li.dataset.at);
    for (const other of list.querySelectorAll("li.item")) {
      if (Date.parse(other.dataset.at) <= at) return list.insertBefore(li, other);
    }
    const more = list.querySelector("li.more");
    if (!more) return list.appendChild(li); // older than everything shown, and nothing older to page to
    return null; // older than this page: it arrives with "Older entries"
  }

  function addNewest(nodes) {
    const seen = known();
    let added = 0;
    for (const li of [...nodes.querySelectorAll("li.item")]) {
      if (seen.has(li.dataset.id)) continue;
      li.classList.add("fresh");
      if (placeByTime(li)) added++;
    }
    if (added) document.querySelector(".timeline .empty")?.remove();
    return added;
  }

  async function refreshHead() {
    const response = await fetch(list.dataset.fragment, { credentials: "same-origin" });
    if (response.ok) addNewest(fragment(await response.text()));
  }

  // The header's figures and the "Upcoming" block, as the server draws them now. A part is replaced only when
  // it changed, so a keyboard user's focus inside it is not lost for nothing.
  let summaryTicket = 0;
  async function refreshSummary() {
    if (!list.dataset.summary) return;
    const ticket = ++summaryTicket;
    const response = await fetch(list.dataset.summary, { credentials: "same-origin" });
    if (!response.ok || ticket !== summaryTicket) return; // an older answer must not overwrite a newer one
    const parts = fragment(await response.text());
    for (const fresh of parts.querySelectorAll("[data-live-part]")) {
      const shown = document.querySelector(`[data-live-part="${fresh.dataset.livePart}"]`);
      if (shown && shown.innerHTML.trim() !== fresh.innerHTML.trim()) shown.replaceChildren(...fresh.childNodes);
    }
  }

  function refreshAll() {
    refreshHead();
    refreshSummary();
  }

  async function loadMore(link) {
    if (link.dataset.loading) return;
    link.dataset.loading = "1";
    link.textContent = "Loading…";
    const response = await fetch(link.dataset.more, { credentials: "same-origin" });
    const holder = link.closest("li");
    if (!response.ok) {
      link.textContent = "Older entries (retry)";
      delete link.dataset.loading;
      return;
    }
    const nodes = fragment(await response.text());
    const seen = known();
    for (const li of [...nodes.querySelectorAll("li.item")]) if (!seen.has(li.dataset.id)) list.appendChild(li);
    holder.remove();
    const next = nodes.querySelector("li.more");
    if (next) {
      list.appendChild(next);
      watchMore();
    }
  }

  const observer =
    "IntersectionObserver" in window
      ? new IntersectionObserver((entries) => {
          for (const e of entries) if (e.isIntersecting) loadMore(e.target);
        })
      : null;
  function watchMore() {
    const link = list.querySelector("a[data-more]");
    if (!link) return;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      loadMore(link);
    });
    observer?.observe(link);
  }
  watchMore();

  if ("EventSource" in window && list.dataset.stream) {
    const source = new EventSource(list.dataset.stream, { withCredentials: true });
    // While the stream is down (EventSource retries on its own) the page still catches up now and then.
    let polling = null;
    source.addEventListener("ready", () => {
      status.textContent = "live";
      status.classList.add("on");
      clearInterval(polling);
      polling = null;
      refreshAll();
    });
    source.addEventListener("item", () => refreshAll());
    // The customer was merged into another: their page is the survivor's now.
    source.addEventListener("merged", (event) => {
      source.close();
      const merge = JSON.parse(event.data);
      status.textContent = "merged into another customer, opening it…";
      const query = new URLSearchParams({ merged_from: merge.contact_id });
      window.location.assign("/customers/" + encodeURIComponent(merge.into) + "?" + query);
    });
    // The customer was erased: nothing of who they were stays on the screen.
    source.addEventListener("erased", () => {
      source.close();
      clearInterval(polling);
      const article = document.querySelector("article.customer");
      const heading = document.createElement("h1");
      heading.textContent = "Erased customer";
      const banner = document.createElement("p");
      banner.className = "alert banner-erased";
      banner.setAttribute("role", "alert");
      banner.textContent = "This customer was erased: their personal data is gone from Touchpoint.";
      const back = document.createElement("a");
      back.href = "/search";
      back.textContent = "Back to search";
      const card = document.createElement("section");
      card.className = "card";
      card.append(heading, banner, back);
      article.replaceChildren(card);
      document.title = "Erased customer · Touchpoint";
    });
    source.addEventListener("error", () => {
      status.textContent = "reconnecting…";
      status.classList.remove("on");
      polling = polling || setInterval(refreshAll, 15000);
    });
    window.addEventListener("pagehide", () => source.close());
  } else if (status) {
    status.textContent = "";
  }

  // "Read message" is a link to the touchpoint's page; with the script it opens the message under the item
  // instead (one click on the list for every item, including those added later), and closes it again.
  list.addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-message]");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    const label = link.querySelector(".label");
    const shown = link.closest("li.item").querySelector(".message-inline");
    if (shown) {
      shown.hidden = !shown.hidden;
      link.setAttribute("aria-expanded", String(!shown.hidden));
      label.textContent = shown.hidden ? "Read message" : "Hide message";
      return;
    }
    if (link.dataset.loading) return;
    link.dataset.loading = "1";
    try {
      const response = await fetch(link.dataset.message, { credentials: "same-origin" });
      if (!response.ok) return window.location.assign(link.href); // the page says what is wrong
      const holder = document.createElement("div");
      holder.className = "message-inline";
      holder.id = "message-" + link.closest("li.item").dataset.id.replace(/[^A-Za-z0-9-]/g, "-");
      holder.append(fragment(await response.text()));
      link.closest("p").after(holder);
      link.setAttribute("aria-controls", holder.id);
      link.setAttribute("aria-expanded", "true");
      label.textContent = "Hide message";
    } catch (error) {
      window.location.assign(link.href);
    } finally {
      delete link.dataset.loading;
    }
  });

  const form = document.querySelector("form[data-log]");
  if (form) {
    const said = form.querySelector(".form-status");
    // The follow-up it fulfils says where the work is owed: its channel, and its thread when that is open.
    form.elements.followup_id.addEventListener("change", (event) => {
      const chosen = event.target.selectedOptions[0];
      if (!chosen || !chosen.value) return;
      if (chosen.dataset.channel) form.elements.channel.value = chosen.dataset.channel;
      const thread = [...form.elements.thread.options].find((o) => o.value && o.value === chosen.dataset.thread);
      if (thread) form.elements.thread.value = thread.value;
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      said.textContent = "Saving…";
      try {
        const response = await fetch(form.action, {
          method: "POST",
          body: new URLSearchParams(new FormData(form)),
          headers: { "X-Console": "fragment" },
          credentials: "same-origin",
        });
        const text = await response.text();
        if (!response.ok) {
          said.textContent = "Not logged: " + text;
          said.classList.add("error");
          return;
        }
        addNewest(fragment(text));
        said.textContent = "Logged.";
        said.classList.remove("error");
        const fulfilled = form.elements.followup_id;
        if (fulfilled.value) fulfilled.selectedOptions[0].remove(); // closed by this touchpoint
        const thread = form.elements.thread;
        const started = response.headers.get("X-Console-New-Thread");
        if (started) {
          // The thread just started is open: the next touchpoint may go on with it.
          const option = new Option(form.elements.subject.value || started, started);
          thread.insertBefore(option, thread.querySelector("option[value=new]"));
        }
        for (const name of ["subject", "body", "outcome", "duration_min", "amount", "thread", "followup_id"]) {
          form.elements[name].value = "";
        }
        const now = response.headers.get("X-Console-Now");
        if (now) form.elements.occurred_at.value = now;
        form.elements.idempotency_key.value = response.headers.get("X-Console-Next-Key") || "";
        refreshSummary();
      } catch (error) {
        said.textContent = "Not logged: the gateway could not be reached.";
        said.classList.add("error");
      } finally {
        button.disabled = false;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const search = document.querySelector("form[data-live-search]");
  if (search) liveSearch(search);
  const list = document.getElementById("timeline");
  if (list) timeline(list);
  for (const input of document.querySelectorAll("[data-select-on-focus]")) {
    input.addEventListener("focus", () => input.select());
  }
});
