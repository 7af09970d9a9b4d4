/* The dashboard's script: keeps the server-rendered pages current from the API's event
   streams (polling the REST API when no stream can be had) and cancels and deletes through
   the API. Plain JavaScript, no build step. Text only ever goes in through textContent. */
"use strict";

(() => {
  const TERMINAL = new Set(["Succeeded", "Failed", "Canceled"]);
  const POLL_MS = 5000;
  const AGE_MS = 30000;
  /** Failed connections in a row before the page polls instead of streaming. */
  const STREAM_FAILURES = 3;

  const slug = (state) => state.toLowerCase().replace(/ /g, "-");

  function when(iso) {
    return iso ? new Date(iso).toISOString().slice(0, 19).replace("T", " ") : "—";
  }

  /** How long ago, in its largest unit: as the server writes it (pages.age). */
  function age(iso) {
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (seconds >= size) return `${Math.floor(seconds / size)} ${unit}`;
    }
    return `${seconds} s`;
  }

  function notice(text) {
    const box = document.getElementById("notice");
    box.textContent = text;
    box.hidden = !text;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    return response.json();
  }

  /** The elements of a status's own fields: not those of statuses nested in it. */
  function own(scope, name) {
    return [...scope.querySelectorAll(`[data-field="${name}"]`)].filter(
      (el) => el.closest("[data-uuid]") === scope,
    );
  }

  function setBar(bar, s) {
    const percent = s.progress === null ? 0 : Math.round(s.progress * 100);
    if (s.progress === null) bar.removeAttribute("aria-valuenow");
    else bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", `${s.completed_steps} of ${s.total_steps} steps`);
    bar.setAttribute("aria-label", `Progress of ${s.name}`);
    bar.querySelector("rect").setAttribute("width", `${percent}%`);
  }

  /** Show status ``s`` in the element of its row, node or page. */
  function fill(scope, s) {
    const set = (name, apply) => own(scope, name).forEach(apply);
    set("name", (el) => { el.textContent = s.name; });
    set("state", (el) => { el.textContent = s.state; el.dataset.state = slug(s.state); });
    set("stage", (el) => { el.textContent = s.state_text; el.hidden = s.state_text === s.state; });
    set("bar", (el) => setBar(el, s));
    set("steps", (el) => { el.textContent = `${s.completed_steps} / ${s.total_steps}`; });
    set("attempts", (el) => { el.textContent = String(s.attempts); });
    set("expand", (el) => {
      el.hidden = !s.is_container;
      const verb = el.getAttribute("aria-expanded") === "true" ? "Hide" : "Show";
      el.setAttribute("aria-label", `${verb} the children of ${s.name}`);
    });
    set("age", (el) => {
      el.dateTime = s.created;
      el.title = `${when(s.created)} UTC`;
      el.textContent = age(s.created);
    });
    for (const name of ["created", "started_at", "finished_at", "modified"]) {
      set(name, (el) => { el.textContent = when(s[name]); });
    }
  }

  /** Follow ``streamUrl``; when it cannot be had, poll with ``pollOnce`` and say so. */
  function follow(streamUrl, onStatus, pollOnce, onOpen = () => {}) {
    let source = null;
    let timer = null;
    let stopped = false;
    let failures = 0;
    const stop = () => {
      stopped = true;
      if (source) source.close();
      clearTimeout(timer);
    };
    const poll = async () => {
      if (stopped) return;
      try {
        await pollOnce();
        notice("Live updates are unavailable: this page refreshes every few seconds.");
      } catch (error) {
        notice(`The server cannot be reached (${error.message}); trying again.`);
      }
      if (!stopped) timer = setTimeout(poll, POLL_MS);
    };
    const fallBack = () => {
      source.close();
      poll();
    };
    if (typeof EventSource !== "function") {
      poll();
      return { stop };
    }
    source = new EventSource(streamUrl);
    source.onopen = () => {
      failures = 0;
      onOpen();
    };
    source.onmessage = (message) => {
      failures = 0;
      if (message.data) onStatus(JSON.parse(message.data));
    };
    source.onerror = () => {
      if (stopped) return;
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= STREAM_FAILURES) fallBack();
    };
    return { stop };
  }

  function listPage(table) {
    const tbody = table.tBodies[0];
    const template = document.getElementById("row-template").content.firstElementChild;
    const empty = document.querySelector('[data-field="empty"]');
    const firstPage = table.dataset.firstPage === "true";
    /** The states filtered on (none: any). The stream is not filtered by state, so that a
        row shown goes on changing when it leaves them; only new rows are held to them. */
    const states = new Set(JSON.parse(table.dataset.states));
    const wanted = (s) => states.size === 0 || states.has(s.state);
    const pending = new Set();
    const rowOf = (uuid) => tbody.querySelector(`tr[data-uuid="${CSS.escape(uuid)}"]`);

    function makeRow(s, depth, parent) {
      const row = template.cloneNode(true);
      row.dataset.uuid = s.uuid;
      row.dataset.url = s.url;
      row.dataset.depth = String(depth);
      if (parent) row.dataset.parent = parent;
      row.style.setProperty("--depth", String(depth));
      own(row, "name")[0].href = table.dataset.taskUrl.replace("__uuid__", s.uuid);
      fill(row, s);
      return row;
    }

    /** A container's row shows its children's sums: read it again after theirs change. */
    function refresh(uuid) {
      const row = rowOf(uuid);
      if (!row || pending.has(uuid)) return;
      pending.add(uuid);
      setTimeout(async () => {
        pending.delete(uuid);
        try {
          fill(row, await getJSON(row.dataset.url));
        } catch (error) {
          // The next change or poll shows it.
        }
      }, 500);
    }

    /** Place a new top-level status by its creation time, newest first. */
    function insert(s) {
      const created = Date.parse(s.created);
      const later = [...tbody.querySelectorAll('tr[data-depth="0"]')].find(
        (row) => Date.parse(own(row, "age")[0].dateTime) < created,
      );
      if (later) later.before(makeRow(s, 0));
      else if (!table.dataset.hasNext) tbody.append(makeRow(s, 0));
      else return;
      empty.hidden = true;
    }

    function onStatus(s) {
      const row = rowOf(s.uuid);
      if (row) fill(row, s);
      else if (s.parent === null && firstPage && wanted(s)) insert(s);
      else if (s.parent !== null) {
        const parent = rowOf(s.parent);
        const expand = parent && own(parent, "expand")[0];
        if (expand && expand.getAttribute("aria-expanded") === "true") {
          const siblings = tbody.querySelectorAll(`tr[data-parent="${CSS.escape(s.parent)}"]`);
          const last = siblings.length ? siblings[siblings.length - 1] : parent;
          last.after(makeRow(s, Number(parent.dataset.depth) + 1, s.parent));
        }
      }
      if (s.parent !== null) refresh(s.parent);
    }

    function collapse(row) {
      for (const child of tbody.querySelectorAll(`tr[data-parent="${CSS.escape(row.dataset.uuid)}"]`)) {
        collapse(child);
        child.remove();
      }
    }

    tbody.addEventListener("click", async (event) => {
      const button = event.target.closest("button.expand");
      if (!button) return;
      const row = button.closest("tr");
      const name = own(row, "name")[0].textContent;
      if (button.getAttribute("aria-expanded") === "true") {
        collapse(row);
        button.setAttribute("aria-expanded", "false");
        button.setAttribute("aria-label", `Show the children of ${name}`);
        return;
      }
      button.setAttribute("aria-expanded", "true");
      button.setAttribute("aria-label", `Hide the children of ${name}`);
      try {
        const page = await getJSON(`${row.dataset.url}/children?limit=100`);
        let last = row;
        // Oldest first, as a chain's steps run (the API answers newest first).
        for (const s of page.results.reverse()) {
          if (rowOf(s.uuid)) continue;
          const child = makeRow(s, Number(row.dataset.depth) + 1, row.dataset.uuid);
          last.after(child);
          last = child;
        }
      } catch (error) {
        notice(`The children could not be read (${error.message}).`);
      }
    });

    /** Read the page again; a row it no longer has (one that left the states filtered on)
        is read by itself until it ends, as the stream would show it. */
    const pollOnce = async () => {
      const found = (await getJSON(table.dataset.poll)).results;
      found.forEach(onStatus);
      const listed = new Set(found.map((s) => s.uuid));
      const left = [...tbody.querySelectorAll('tr[data-depth="0"]')].filter(
        (row) => !listed.has(row.dataset.uuid) && !TERMINAL.has(own(row, "state")[0].textContent),
      );
      await Promise.all(left.map((row) => getJSON(row.dataset.url).then(
        (s) => fill(row, s),
        () => {}, // Gone, or not now: the next poll tries again.
      )));
    };
    // The stream starts where it connects: what changed since the page was made is read once.
    follow(table.dataset.events, onStatus, pollOnce, () => pollOnce().catch(() => {}));
  }

  function detailPage(section) {
    const dialog = document.getElementById("confirm");
    const cancel = section.querySelector('button[data-action="cancel"]');
    let follower = null;
    let retriesAsked = 0;

    function showArtifacts(s) {
      const list = own(section, "artifacts")[0];
      list.replaceChildren(...s.artifacts.map((a) => {
        const item = document.createElement("li");
        const name = document.createElement("span");
        name.className = "artifact-name";
        name.textContent = a.name;
        item.append(name, " ");
        if (a.file) {
          const link = document.createElement("a");
          link.href = a.file;
          link.download = "";
          link.textContent = `Download ${a.filename || "file"}`;
          item.append(link);
        } else if (a.url && /^https?:\/\//i.test(a.url)) {
          const link = document.createElement("a");
          link.href = a.url;
          link.rel = "noopener noreferrer nofollow";
          link.textContent = a.url;
          item.append(link);
        } else if (a.text !== null) {
          const text = document.createElement("span");
          text.className = "artifact-text";
          text.textContent = a.text;
          item.append(text);
        }
        return item;
      }));
      own(section, "no-artifacts")[0].hidden = s.artifacts.length > 0;
      const errors = s.artifacts.filter((a) => a.name === section.dataset.errorArtifact && a.text);
      const box = own(section, "errors")[0];
      box.replaceChildren(box.querySelector("h2"), ...errors.map((a) => {
        const text = document.createElement("p");
        text.textContent = a.text;
        return text;
      }));
      box.hidden = errors.length === 0;
      const trace = own(section, "traceback-box")[0];
      if (trace) {
        trace.hidden = !s.traceback;
        own(section, "traceback")[0].textContent = s.traceback || "";
      }
    }

    /** The attempts that ended in a retry, as the server renders them. */
    function showRetries(retries) {
      own(section, "retries")[0].replaceChildren(...retries.map((a) => {
        const item = document.createElement("li");
        const title = document.createElement("span");
        title.className = "attempt";
        title.textContent = `Attempt ${a.number}`;
        const started = document.createElement("time");
        started.textContent = when(a.started_at);
        const retried = document.createElement("time");
        retried.textContent = when(a.retried_at);
        item.append(title, ": started ", started, ", retried ", retried);
        if (a.message) {
          const message = document.createElement("span");
          message.className = "attempt-message";
          message.textContent = a.message;
          item.append(message);
        }
        return item;
      }));
      own(section, "retries-box")[0].hidden = retries.length === 0;
    }

    function onStatus(s) {
      if (s.uuid !== section.dataset.uuid) {
        const node = document.querySelector(`#children [data-uuid="${CSS.escape(s.uuid)}"]`);
        if (node) fill(node, s);
        return;
      }
      const counted = own(section, "attempts")[0].textContent;
      fill(section, s);
      showArtifacts(s);
      // Events carry the count, not the history: a new attempt brings the status's own.
      if (s.retries) showRetries(s.retries);
      else if (String(s.attempts) !== counted) {
        const asked = ++retriesAsked;  // of answers arriving out of order, the last asked wins
        getJSON(section.dataset.url).then((full) => {
          if (asked === retriesAsked) showRetries(full.retries);
        }, () => {});
      }
      if (TERMINAL.has(s.state)) {
        if (cancel) cancel.hidden = true;
        if (follower) follower.stop();
      }
    }

    async function act(button) {
      const deleting = button.dataset.action === "delete";
      const response = await fetch(button.dataset.url, {
        method: deleting ? "DELETE" : "POST",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({ detail: response.statusText }));
        notice(`That did not work: ${body.detail}`);
        return;
      }
      if (deleting) {
        window.location.assign(section.dataset.list);
        return;
      }
      onStatus(await response.json());
      document.getElementById("task-name").focus();
    }

    section.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      document.getElementById("confirm-question").textContent = button.dataset.question;
      document.getElementById("confirm-yes").textContent = button.dataset.confirm;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => {
        if (dialog.returnValue === "yes") act(button);
        else button.focus();
      }, { once: true });
      dialog.showModal();
    });

    follower = follow(section.dataset.events, onStatus, async () => {
      onStatus(await getJSON(section.dataset.url));
      if (document.getElementById("children")) {
        const page = await getJSON(`${section.dataset.url}/children?limit=100`);
        page.results.forEach(onStatus);
      }
    });
  }

  function start() {
    const table = document.querySelector("table.tasks[data-events]");
    if (table) listPage(table);
    const section = document.querySelector("section.status[data-events]");
    if (section) detailPage(section);
    setInterval(() => {
      document.querySelectorAll('time[data-field="age"][datetime]').forEach((el) => {
        el.textContent = age(el.dateTime);
      });
    }, AGE_MS);
  }

  start();
})();
