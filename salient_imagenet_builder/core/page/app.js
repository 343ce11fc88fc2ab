// The annotation page: one task at a time (a (class, feature) pair; in a generalization study a pair and a band of
// ranks), answers kept in localStorage per annotator id, exported as a CSV (one row per answer) in the study's
// format: the published results format for "discover", the generalization study's for "generalize".
"use strict";
(function () {
  const study = JSON.parse(document.getElementById("study-data").textContent);
  const MODES = {
    discover: {
      columns: ["WorkerId", "Input.wordnet_id", "Input.class_index", "Input.feature_index", "Input.feature_rank",
                "Answer.main", "Answer.confidence", "Answer.reasons"],
      inputs: (p) => [p.wordnet_id, p.class_index, p.feature_index, p.feature_rank],
      keys: { m: "main_object", o: "separate_object", b: "background" },
      title: (p) => "",
      reasonRequired: false,
    },
    generalize: {
      columns: ["WorkerId", "Input.class_index", "Input.feature_index", "Input.band", "Answer.main_question",
                "Answer.confidence", "Answer.reasons"],
      inputs: (p) => [p.class_index, p.feature_index, p.band],
      keys: { s: "same", d: "different", a: "A_unclear", b: "B_unclear" },
      title: (p) => ", Section B: ranks " + p.band,
      reasonRequired: true,  // the study's question 3
    },
  };
  const mode = MODES[study.mode || "discover"];
  const storageKey = "salient-" + (study.mode || "discover") + "/" + study.id;
  const $ = (id) => document.getElementById(id);
  document.querySelectorAll("[data-mode]").forEach((el) => {
    if (el.dataset.mode !== (study.mode || "discover")) el.remove();
  });

  function load() {
    try { return JSON.parse(localStorage.getItem(storageKey)) || {}; } catch (e) { return {}; }
  }
  const state = Object.assign({ annotator: "", position: 0, answers: {} }, load());

  function save() {
    try { localStorage.setItem(storageKey, JSON.stringify(state)); }
    catch (e) { say("could not save in this browser's storage: " + e.message + "; export now"); }
  }
  function say(text) { $("message").textContent = text; }
  function mine() {
    if (!state.answers[state.annotator]) state.answers[state.annotator] = {};
    return state.answers[state.annotator];
  }
  function complete(a) {
    return Boolean(a && a.main && a.confidence && (!mode.reasonRequired || (a.reason || "").trim()));
  }
  function pair() { return study.pairs[state.position]; }

  function show() {
    const p = pair();
    const a = state.annotator ? (mine()[p.key] || {}) : {};
    $("panel").src = p.panel;
    $("pair-title").textContent = "Class " + p.class_index + " (" + p.wordnet_id + "): " + p.class_name +
      ", feature " + p.feature_index + mode.title(p);
    $("pair-definition").textContent = p.definition;
    $("position").textContent = "Pair " + (state.position + 1) + " of " + study.pairs.length;
    document.querySelectorAll("input[name=main]").forEach((r) => { r.checked = r.value === a.main; });
    document.querySelectorAll("input[name=confidence]").forEach((r) => { r.checked = Number(r.value) === a.confidence; });
    $("reason").value = a.reason || "";
    refreshProgress();
  }

  function refreshProgress() {
    const done = state.annotator ? study.pairs.filter((q) => complete(mine()[q.key])).length : 0;
    $("progress").textContent = done + " / " + study.pairs.length + " answered";
    $("progress-bar").max = study.pairs.length;
    $("progress-bar").value = done;
    document.body.classList.toggle("answered", Boolean(state.annotator) && complete(mine()[pair().key]));
  }

  function record(field, value) {
    if (!state.annotator) { say("enter your annotator id first"); $("annotator").focus(); show(); return; }
    const key = pair().key;
    mine()[key] = Object.assign({}, mine()[key], { [field]: value });
    save();
    say("");
    if (field !== "reason") show();  // re-rendering the box being typed in would move its caret
    else if (mode.reasonRequired) refreshProgress();
  }

  function move(step) {
    state.position = Math.min(study.pairs.length - 1, Math.max(0, state.position + step));
    save();
    show();
  }

  function nextUnanswered() {
    for (let i = 1; i <= study.pairs.length; i++) {
      const index = (state.position + i) % study.pairs.length;
      if (!complete(mine()[study.pairs[index].key])) { state.position = index; save(); show(); return; }
    }
    say("every pair is answered: export your CSV");
  }

  function csvField(value) {
    const text = String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function exportCsv() {
    if (!state.annotator) { say("enter your annotator id first"); $("annotator").focus(); return; }
    const rows = [mode.columns.join(",")];
    let answered = 0;
    for (const p of study.pairs) {
      const a = mine()[p.key];
      if (!complete(a)) continue;
      answered++;
      rows.push([state.annotator, ...mode.inputs(p), a.main, a.confidence.toFixed(1), (a.reason || "").trim()]
        .map(csvField).join(","));
    }
    const text = rows.join("\n") + "\n";
    $("export-csv").value = text;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    link.download = "answers-" + state.annotator.replace(/[^A-Za-z0-9_.-]/g, "_") + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    const noReason = study.pairs.filter((p) => { const a = mine()[p.key]; return a && a.main && a.confidence &&
                                                     !complete(a); }).length;
    say("exported " + answered + " answer(s)" +
        (answered < study.pairs.length ? ", " + (study.pairs.length - answered) + " pair(s) still unanswered" : "") +
        (noReason ? " (" + noReason + " of them without the required reason)" : ""));
  }

  $("annotator").value = state.annotator;
  $("annotator").addEventListener("change", (e) => {
    state.annotator = e.target.value.trim();
    e.target.value = state.annotator;
    save();
    show();
  });
  document.querySelectorAll("input[name=main]").forEach((r) =>
    r.addEventListener("change", () => record("main", r.value)));
  document.querySelectorAll("input[name=confidence]").forEach((r) =>
    r.addEventListener("change", () => record("confidence", Number(r.value))));
  $("reason").addEventListener("input", (e) => record("reason", e.target.value));
  $("prev").addEventListener("click", () => move(-1));
  $("next").addEventListener("click", () => move(1));
  $("export").addEventListener("click", exportCsv);

  document.addEventListener("keydown", (e) => {
    const typing = e.target.tagName === "TEXTAREA" || (e.target.tagName === "INPUT" && e.target.type !== "radio");
    if (typing) { if (e.key === "Escape") e.target.blur(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (mode.keys[key]) record("main", mode.keys[key]);
    else if (/^[1-5]$/.test(key)) record("confidence", Number(key));
    else if (key === "n" || key === "arrowright") move(1);
    else if (key === "p" || key === "arrowleft") move(-1);
    else if (key === "u") nextUnanswered();
    else if (key === "r") { $("reason").focus(); }
    else if (key === "x") exportCsv();
    else return;
    e.preventDefault();
  });

  if (state.position >= study.pairs.length) state.position = 0;
  if (!state.annotator) say("enter your annotator id to start");
  show();
})();
