/* MatrixCloud console: progressive enhancement, no framework, no build.
 * - live events: EventSource on the API's SSE endpoints (same-origin cookie session)
 * - progress bars from event data
 * - a form per MCP tool generated from its JSON input schema; calls go to the API
 * - live lists and the overview's counts from the workspace's activity stream
 * Every page works without this file; it only makes them live. */
(function () {
  "use strict";

  var TERMINAL = { complete: 1, error: 1, expired: 1, cancelled: 1 };

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (attrs[key] !== null && attrs[key] !== undefined && attrs[key] !== false) {
        node.setAttribute(key, attrs[key] === true ? "" : attrs[key]);
      }
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function api(method, url, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": csrf() }
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(data.error || ("HTTP " + response.status));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  /* --- progress ------------------------------------------------------------------ */

  // A fraction 0..1 from the data of an event, or null. Handlers report a percent
  // (`progress`, `percent`) or done/total counters (bytes or files).
  function progressOf(data) {
    if (!data || typeof data !== "object") return null;
    if (data.progress && typeof data.progress === "object") return progressOf(data.progress);
    // `progress` and `percent` are percentages (0..100), as installations store them.
    if (typeof data.percent === "number") return Math.min(1, data.percent / 100);
    if (typeof data.progress === "number") return Math.min(1, data.progress / 100);
    var pairs = [["downloaded_bytes", "total_bytes"], ["bytes_done", "bytes_total"],
      ["downloaded", "total"], ["done", "total"], ["completed", "total"], ["current", "total"]];
    for (var i = 0; i < pairs.length; i++) {
      var done = data[pairs[i][0]], total = data[pairs[i][1]];
      if (typeof done === "number" && typeof total === "number" && total > 0) {
        return Math.min(1, done / total);
      }
    }
    return null;
  }

  function showProgress(scope, fraction) {
    var bar = scope.querySelector("[data-progress]");
    if (!bar) return;
    var box = bar.closest(".progress-box");
    if (box) box.hidden = false;
    bar.value = Math.round(fraction * 100);
    bar.setAttribute("aria-valuenow", String(bar.value));
    var text = scope.querySelector("[data-progress-text]");
    if (text) text.textContent = bar.value + "%";
  }

  /* --- live events ------------------------------------------------------------------ */

  function statusLabel(kind, event, current) {
    if (TERMINAL[event.status]) return event.status;
    if (event.step === "ready") return "ready";
    if (kind === "session") return current === "ready" ? "ready" : "starting";
    return event.status || current;
  }

  // Events shown as one row (as the server renders them, console/selectors.py): the
  // latest install progress of a package replaces the previous one; refused
  // connections to one host:port are counted.
  function collapseKey(event) {
    var data = event.data || {};
    if (event.step === "install" && event.status === "progress") return "install:" + (data.package || "");
    if (event.step === "egress_denied") return "egress:" + (data.host || "") + ":" + (data.port || "");
    return "";
  }

  function detailOf(event) {
    var data = event.data || {};
    if (event.step === "install") {
      return [
        data.package ? String(data.package) : "",
        typeof data.fetched === "number" ? data.fetched + " fetched" : "",
        typeof data.elapsed_s === "number" ? data.elapsed_s.toFixed(1) + " s" : "",
        data.line ? String(data.line) : ""
      ].filter(Boolean).join(" · ");
    }
    if (event.step === "egress_denied" && data.host) return data.host + ":" + (data.port || "");
    return "";
  }

  function collapsedRow(list, key) {
    var rows = list.querySelectorAll("li[data-collapse]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-collapse") === key) return rows[i];
    }
    return null;
  }

  function fillEvent(item, event, count) {
    item.textContent = "";
    item.appendChild(el("span", { "class": "step" }, event.step));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(el("span", { "class": "status" }, event.status));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(el("span", { "class": "message" }, event.message));
    var detail = detailOf(event);
    if (detail) {
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("span", { "class": "detail" }, detail));
    }
    if (count) {
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("span", { "class": "count", "data-count": count }, "\u00d7" + count));
    }
  }

  function appendEvent(list, seq, event) {
    var key = collapseKey(event);
    var item = key ? collapsedRow(list, key) : null;
    var counted = key.indexOf("egress:") === 0;
    if (item) {
      var before = item.querySelector(".count");
      var count = before ? Number(before.getAttribute("data-count")) + 1 : 2;
      item.setAttribute("data-seq", seq);
      item.setAttribute("data-live", "");
      item.className = "ev st-" + event.status;
      fillEvent(item, event, counted ? count : 0);
      return;
    }
    item = el("li", { "data-seq": seq, "data-live": true, "class": "ev st-" + event.status,
      "data-collapse": key || null });
    fillEvent(item, event, counted ? 1 : 0);
    list.appendChild(item);
  }

  function followEvents(list) {
    if (!window.EventSource || !list.dataset.stream || list.hasAttribute("data-ended")) return;
    var seen = 0;
    list.querySelectorAll("li[data-seq]").forEach(function (item) {
      seen = Math.max(seen, Number(item.getAttribute("data-seq")));
    });
    var status = document.getElementById("status");
    var scope = list.closest("main") || document;
    var source = new EventSource(list.dataset.stream);
    source.onmessage = function (message) {
      var seq = Number(message.lastEventId || 0);
      if (seq && seq <= seen) return; // already on the page (the stream replays history)
      seen = Math.max(seen, seq);
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      appendEvent(list, seq, event);
      if (status) {
        status.textContent = statusLabel(status.dataset.kind, event, status.textContent.trim());
      }
      var fraction = progressOf(event.data);
      if (fraction !== null) showProgress(scope, fraction);
      if (event.status === "complete") showProgress(scope, 1);
      document.dispatchEvent(new CustomEvent("mxc:event", { detail: event }));
      if (TERMINAL[event.status]) {
        source.close();
        list.setAttribute("data-ended", "");
      }
    };
    source.onerror = function () {
      if (list.hasAttribute("data-ended")) source.close();
    };
  }

  /* --- tool forms from JSON schema ---------------------------------------------------- */

  var fieldCount = 0;

  function schemaField(name, schema, required) {
    var id = "f" + (++fieldCount);
    var wrap = el("div", { "class": "field" });
    var type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
    var label = el("label", { "for": id }, (schema.title || name) + (required ? " (required)" : ""));
    wrap.appendChild(label);
    var input;
    var help = schema.description ? id + "-help" : null;
    if (Array.isArray(schema["enum"])) {
      input = el("select", { id: id, name: name, required: required, "aria-describedby": help });
      if (!required) input.appendChild(el("option", { value: "" }, ""));
      schema["enum"].forEach(function (value) {
        input.appendChild(el("option", { value: JSON.stringify(value) }, String(value)));
      });
      input.dataset.kind = "enum";
    } else if (type === "boolean") {
      input = el("input", { id: id, name: name, type: "checkbox", "aria-describedby": help });
      input.checked = schema["default"] === true;
      input.dataset.kind = "boolean";
      wrap.classList.add("check");
    } else if (type === "number" || type === "integer") {
      input = el("input", {
        id: id, name: name, type: "number", required: required, "aria-describedby": help,
        step: type === "integer" ? "1" : "any", min: schema.minimum, max: schema.maximum
      });
      if (typeof schema["default"] === "number") input.value = schema["default"];
      input.dataset.kind = type;
    } else if (type === "string" || type === undefined && !schema.properties) {
      input = el("input", { id: id, name: name, type: "text", required: required,
        "aria-describedby": help, autocomplete: "off" });
      if (typeof schema["default"] === "string") input.value = schema["default"];
      input.dataset.kind = "string";
    } else {
      input = el("textarea", { id: id, name: name, rows: "3", spellcheck: "false",
        required: required, "aria-describedby": help,
        placeholder: type === "array" ? "[ … ] (JSON)" : "{ … } (JSON)" });
      if (schema["default"] !== undefined) input.value = JSON.stringify(schema["default"]);
      input.dataset.kind = "json";
    }
    wrap.appendChild(input);
    if (help) wrap.appendChild(el("small", { id: help }, schema.description));
    return wrap;
  }

  function readArguments(form) {
    var args = {};
    form.querySelectorAll("[data-kind]").forEach(function (input) {
      var kind = input.dataset.kind, raw = input.value;
      if (kind === "boolean") { args[input.name] = input.checked; return; }
      if (raw === "" && !input.required) return;
      if (kind === "integer") args[input.name] = parseInt(raw, 10);
      else if (kind === "number") args[input.name] = Number(raw);
      else if (kind === "enum") args[input.name] = JSON.parse(raw);
      else if (kind === "json") {
        try { args[input.name] = JSON.parse(raw); }
        catch (e) { throw new Error(input.name + ": not valid JSON"); }
      } else args[input.name] = raw;
    });
    return args;
  }

  function renderResult(box, name, result, error) {
    box.textContent = "";
    var wrap = el("div", { "class": "result" + (error || (result && result.isError) ? " is-error" : "") });
    wrap.appendChild(el("h3", {}, "Result of " + name));
    if (error) {
      wrap.appendChild(el("p", { "class": "error", role: "alert" }, error));
    } else {
      var content = (result && Array.isArray(result.content)) ? result.content : [];
      content.forEach(function (item) {
        if (item.type === "text") wrap.appendChild(el("pre", { "class": "text" }, item.text));
        else if (item.type === "image" && /^image\//.test(item.mimeType || "")) {
          wrap.appendChild(el("img", { src: "data:" + item.mimeType + ";base64," + item.data,
            alt: "image returned by " + name }));
        } else wrap.appendChild(el("pre", {}, JSON.stringify(item, null, 2)));
      });
      if (!content.length) wrap.appendChild(el("pre", {}, JSON.stringify(result, null, 2)));
    }
    box.appendChild(wrap);
  }

  function toolForm(section, tool) {
    var article = el("article", { "class": "tool", "data-tool": tool.name });
    article.appendChild(el("h3", {}, tool.name));
    if (tool.description) article.appendChild(el("p", {}, tool.description));
    var form = el("form", { "aria-label": "Call " + tool.name });
    var schema = tool.input_schema || tool.inputSchema || {};
    var props = schema.properties || {};
    var required = schema.required || [];
    Object.keys(props).forEach(function (name) {
      form.appendChild(schemaField(name, props[name] || {}, required.indexOf(name) >= 0));
    });
    var button = el("button", { type: "submit" }, "Call " + tool.name);
    form.appendChild(button);
    var box = el("div", { "class": "tool-result", "aria-live": "polite" });
    form.addEventListener("submit", function (submit) {
      submit.preventDefault();
      var args;
      try { args = readArguments(form); } catch (e) { renderResult(box, tool.name, null, e.message); return; }
      button.disabled = true;
      api("POST", section.dataset.callUrl, { name: tool.name, arguments: args })
        .then(function (data) { renderResult(box, tool.name, data.result, null); })
        .catch(function (e) { renderResult(box, tool.name, null, e.message); })
        .then(function () { button.disabled = false; });
    });
    article.appendChild(form);
    article.appendChild(box);
    return article;
  }

  function showTools(section, tools) {
    var list = document.getElementById("tool-list");
    list.textContent = "";
    tools.forEach(function (tool) { list.appendChild(toolForm(section, tool)); });
  }

  function enhanceTools(section) {
    var data = document.getElementById("tools-data");
    var tools = data ? JSON.parse(data.textContent) : [];
    if (tools.length) showTools(section, tools);
    document.addEventListener("mxc:event", function (e) {
      var event = e.detail;
      if (event.step === "ready" || event.step === "tools_changed") {
        api("GET", section.dataset.toolsUrl).then(function (answer) {
          showTools(section, answer.tools || []);
        }).catch(function () { /* ended meanwhile: the events say why */ });
      } else if (TERMINAL[event.status]) {
        var list = document.getElementById("tool-list");
        list.textContent = "";
        list.appendChild(el("p", { "class": "muted" }, "The sandbox has ended."));
        var stop = document.getElementById("stop-form");
        if (stop) stop.hidden = true;
      }
    });
  }

  /* --- sections that refresh themselves (re-read from the same page) -------------------- */

  // Re-read this page and swap in the fresh copies of `sections` (elements with ids).
  function refreshSections(sections, then) {
    return fetch(window.location.pathname + window.location.search, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        sections.forEach(function (section) {
          var copy = fresh.getElementById(section.id);
          if (copy) section.innerHTML = copy.innerHTML;
          if (then) then(section);
        });
      }).catch(function () {});
  }

  function refreshCounts(box) {
    return api("GET", box.dataset.src).then(function (counts) {
      box.querySelectorAll("[data-count]").forEach(function (dd) {
        var value = counts[dd.dataset.count];
        if (value !== undefined) dd.textContent = value;
      });
    }).catch(function () {});
  }

  /* --- live lists: the workspace's activity stream ------------------------------------- */

  // The stream (/console/activity) sends the workspace's list versions when they change;
  // a list (an element with `data-live="<topic>"` and an id, or the overview's counts) is
  // re-read only when its topic's version moved. Nothing polls while the stream works.
  var FALLBACK_FIRST_MS = 5000, FALLBACK_MAX_MS = 60000, FALLBACK_TRIES = 20;

  function followActivity(url) {
    var byTopic = {};
    document.querySelectorAll("[data-live][id]").forEach(function (section) {
      (byTopic[section.dataset.live] = byTopic[section.dataset.live] || []).push(section);
    });
    var counts = document.getElementById("counts");
    if (counts && counts.dataset.src) (byTopic.jobs = byTopic.jobs || []).push(counts);
    if (!url || !Object.keys(byTopic).length) return;
    var known = null, tries = 0, delay = FALLBACK_FIRST_MS;

    function refresh(topic) {
      var sections = (byTopic[topic] || []).filter(function (s) { return s !== counts; });
      if (sections.length) refreshSections(sections);
      if (counts && (byTopic[topic] || []).indexOf(counts) >= 0) refreshCounts(counts);
    }
    function refreshAll() { Object.keys(byTopic).forEach(refresh); }

    function onVersions(versions) {
      if (known) {
        Object.keys(versions).forEach(function (topic) {
          if (versions[topic] !== known[topic]) refresh(topic);
        });
      }
      known = versions;
    }

    // The fallback, and only for a stream that failed for good (an error answer, which
    // EventSource does not retry; a dropped connection it retries by itself): re-read the
    // lists once, then try the stream again after 5 s, doubling to 60 s, at most 20
    // times. That bounds what a broken stream costs, and a healed one ends it.
    function fallback() {
      document.body.dataset.activityState = "fallback";
      if (tries >= FALLBACK_TRIES) return;
      tries += 1;
      window.setTimeout(function () {
        if (!document.hidden) refreshAll();
        known = null;
        open();
      }, delay);
      delay = Math.min(FALLBACK_MAX_MS, delay * 2);
    }

    function open() {
      if (!window.EventSource) { fallback(); return; }
      var source = new EventSource(url);
      source.onmessage = function (message) {
        var data;
        try { data = JSON.parse(message.data); } catch (e) { return; }
        if (!data || !data.versions) return;
        onVersions(data.versions);
        // Following from here on (the first versions are what the lists are compared to).
        document.body.dataset.activityState = "open";
        tries = 0; delay = FALLBACK_FIRST_MS;
      };
      source.onerror = function () {
        if (source.readyState === EventSource.CLOSED) { source.close(); fallback(); }
      };
    }
    open();
  }

  /* --- installations: a progress bar per model.attach job ------------------------------ */

  function followInstallation(item) {
    if (!window.EventSource || item.dataset.following) return;
    item.dataset.following = "1";
    var source = new EventSource(item.dataset.jobStream);
    var step = item.querySelector("[data-inst-step]");
    source.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      var fraction = progressOf(event.data);
      if (fraction !== null) showProgress(item, fraction);
      if (step) step.textContent = event.message;
      if (TERMINAL[event.status]) {
        source.close();
        // The job's end settles the installation (and its profile): re-read them.
        var settled = document.querySelectorAll("[data-settle][id]");
        refreshSections(Array.prototype.slice.call(settled), followInstallations);
      }
    };
  }

  function followInstallations(scope) {
    scope.querySelectorAll("li[data-job-stream]").forEach(followInstallation);
  }

  /* --- MatrixShell terminal ------------------------------------------------------------ */

  function enhanceShell(form) {
    var input = form.querySelector("input[name=command]");
    var terminal = document.getElementById("terminal");
    var history = [], back = 0;
    function write(text, cls) {
      terminal.appendChild(el("span", cls ? { "class": cls } : {}, text));
      terminal.scrollTop = terminal.scrollHeight;
    }
    input.addEventListener("keydown", function (key) {
      if (key.key === "ArrowUp" && back < history.length) {
        back += 1; input.value = history[history.length - back]; key.preventDefault();
      } else if (key.key === "ArrowDown" && back > 0) {
        back -= 1; input.value = back ? history[history.length - back] : ""; key.preventDefault();
      }
    });
    form.addEventListener("submit", function (submit) {
      submit.preventDefault();
      var command = input.value;
      if (!command.trim()) return;
      history.push(command); back = 0; input.value = ""; input.disabled = true;
      write("$ " + command + "\n");
      api("POST", form.dataset.execUrl, { command: command }).then(function (result) {
        write(result.stdout || "");
        write(result.stderr || "", "err");
        write("[exit " + result.exit_code + (result.timed_out ? ", timed out" : "") +
          (result.truncated ? ", output cut" : "") + "]\n");
      }).catch(function (e) {
        write(e.message + "\n", "err");
      }).then(function () { input.disabled = false; input.focus(); });
    });
  }

  /* --- once-only secrets: copy buttons ------------------------------------------------- */

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.getElementById(button.dataset.copy);
        if (target && navigator.clipboard) navigator.clipboard.writeText(target.textContent.trim());
        button.textContent = "Copied";
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var tools = document.getElementById("tools");
    if (tools) enhanceTools(tools);
    document.querySelectorAll("ol.events[data-stream]").forEach(followEvents);
    copyButtons();
    followActivity(document.body.dataset.activity);
    followInstallations(document);
    var shellForm = document.getElementById("shell-form");
    if (shellForm) enhanceShell(shellForm);
    window.MatrixConsole = { followEvents: followEvents, progressOf: progressOf, api: api };
  });
})();
