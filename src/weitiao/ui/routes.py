"""The UI's pages and its JSON API (see ui.app). Every action calls what the CLI calls: the config validation,
`data check`, the memory guard, and `weitiao train`, `export` and `serve` as jobs."""
from __future__ import annotations

import re
from pathlib import Path

from fastapi import Request  # at module level: FastAPI reads the handlers' string annotations from here

from weitiao.errors import WeitiaoError
from weitiao.ui import form as run_form
from weitiao.ui import i18n, preferences, runs_view

HERE = Path(__file__).parent
UPLOAD_NAME = re.compile(r"^[\w.-]{1,100}\.(jsonl|json|csv|parquet|txt)$")


def integer(request: dict, key: str, default: int, low: int, high: int) -> int:
    """A whole number from a request, in [low, high]; anything else is one error naming the field."""
    value = request.get(key, default)
    try:
        number = int(str(value))
    except ValueError:
        raise WeitiaoError(f"{key}: {value!r} is not a whole number") from None
    if not low <= number <= high:
        raise WeitiaoError(f"{key}: {number} is outside {low}..{high}")
    return number


def templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def add_pages(app, state) -> None:
    from fastapi.responses import FileResponse, HTMLResponse

    from weitiao.config import POLICY_TASKS

    env = templates()

    def page(request: Request, name: str, **values) -> HTMLResponse:
        """The page in the language of the request (ui.i18n); a language chosen by ?lang= is kept in a cookie."""
        chosen = request.query_params.get("lang")
        lang = i18n.language(chosen, request.cookies.get("lang"), request.headers.get("accept-language"))
        t = i18n.translator(lang)
        response = HTMLResponse(env.get_template(name).render(root=str(state.root), lang=lang, t=t,
                                                             js_text=i18n.MESSAGES.get(lang, {}), **values))
        if chosen in i18n.LANGUAGES:
            response.set_cookie("lang", chosen, max_age=365 * 24 * 3600, samesite="lax")
        return response

    @app.get("/", response_class=HTMLResponse)
    def new_run(request: Request):
        from weitiao.config import TASK_RULES
        from weitiao.methods import METHODS

        return page(request, "new.html", methods=tuple(METHODS), tasks=list(TASK_RULES), page_name="new")

    @app.get("/runs", response_class=HTMLResponse)
    def runs(request: Request):
        # a job that has not written its run folder yet is not a row: the page reloads while any job runs
        return page(request, "runs.html", page_name="runs",
                    runs=[runs_view.summary(state.root, f) for f in runs_view.run_folders(state.root)],
                    jobs_running=sum(state.jobs.running(j) for j in state.jobs.all()))

    @app.get("/run", response_class=HTMLResponse)
    def run(request: Request, name: str):
        folder = runs_view.resolve_any(state.root, name)
        if not folder.is_dir() and state.jobs.for_target(str(folder)):  # launched; its folder is not written yet
            return page(request, "run.html", run=runs_view.starting(state.root, folder), page_name="runs",
                        counts={"pairs": 0, "ties": 0})
        folder = runs_view.resolve(state.root, name)
        return page(request, "run.html", run=runs_view.summary(state.root, folder), page_name="runs",
                    counts=preferences.counts(folder))

    @app.get("/chat", response_class=HTMLResponse)
    def chat(request: Request, name: str):
        return page(request, "chat.html", run=runs_view.summary(state.root, runs_view.resolve(state.root, name)),
                    page_name="runs")

    @app.get("/preferences", response_class=HTMLResponse)
    def prefer(request: Request, name: str):
        folder = runs_view.resolve(state.root, name)
        others = [runs_view.summary(state.root, f) for f in runs_view.run_folders(state.root) if f != folder]
        return page(request, "preferences.html", run=runs_view.summary(state.root, folder), counts=preferences.counts(folder),
                    modes=preferences.MODES, page_name="runs",
                    others=[r["name"] for r in others if r["status"] == "finished" and r["task"] in POLICY_TASKS])

    @app.get("/files/{path:path}")
    def files(path: str):
        """A file of a run folder (the report and its images), never anything outside the UI's root."""
        target = (state.root / path).resolve()
        if state.root not in target.parents or not target.is_file():
            raise WeitiaoError(f"{path}: no such file under {state.root}")
        return FileResponse(target)


def add_run_api(app, state) -> None:
    """New run: config, data check, memory estimate, upload, launch; Runs: status, stop, resume."""
    from weitiao.ui.actions import data_check, memory_estimate

    @app.post("/api/config")
    def config(form: dict):
        data, _ = run_form.validated(form, state.root)
        return {"yaml": run_form.as_yaml(data), "path": str(state.root / "configs" / f"{form['name']}.yaml")}

    @app.post("/api/check")
    def check(form: dict):
        _, cfg = run_form.validated(form, state.root)
        return data_check(cfg)

    @app.post("/api/estimate")
    def estimate(form: dict):
        _, cfg = run_form.validated(form, state.root)
        return memory_estimate(cfg)

    @app.post("/api/upload")
    def upload(file: dict):
        name, text = str(file.get("name", "")), file.get("text")
        if not UPLOAD_NAME.match(name) or not isinstance(text, str):
            raise WeitiaoError(f"upload: {name!r} must be a .jsonl, .json, .csv, .parquet or .txt file name of "
                               "letters, digits, '.', '_' or '-', with its text")
        target = state.root / "uploads" / name
        if target.exists() and target.read_text(encoding="utf-8", errors="replace") != text:
            raise WeitiaoError(f"upload: {target} exists with other contents; rename the file (weitiao does not "
                               "overwrite your data)")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return {"path": str(target)}

    @app.post("/api/launch")
    def launch(form: dict):
        data, cfg = run_form.validated(form, state.root)
        if Path(cfg.output.dir).exists() and not state.jobs.for_target(cfg.output.dir):
            raise WeitiaoError(f"run name: {cfg.output.dir} exists; choose another name (a run is never "
                               "overwritten from the UI)")
        path = state.root / "configs" / f"{form['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not state.jobs.for_target(cfg.output.dir):
            path.write_text(run_form.as_yaml(data), encoding="utf-8")
        job, started = state.jobs.start("train", ["train", str(path)], cfg.output.dir)
        return {"job": job.as_dict(), "started": started, "run": form["name"], "config": str(path)}

    @app.get("/api/run")
    def run_status(name: str):
        folder = runs_view.resolve_any(state.root, name)
        jobs = state.jobs.for_target(str(folder))
        return {"run": runs_view.summary(state.root, folder) if folder.is_dir() else runs_view.starting(state.root,
                                                                                                        folder),
                "curve": runs_view.curve_svg(runs_view.losses(folder)) if folder.is_dir() else "",
                "jobs": [{**j.as_dict(), "running": state.jobs.running(j), "exit": state.jobs.exit_code(j)}
                         for j in jobs],
                "log": state.jobs.log_tail(jobs[0]) if jobs else ""}

    @app.post("/api/stop")
    def stop(name: str):
        folder = runs_view.resolve(state.root, name)
        stopped = [j.id for j in state.jobs.for_target(str(folder)) if j.kind == "train" and state.jobs.stop(j)]
        if not stopped:
            raise WeitiaoError(f"run {name}: no training job of this UI is running for it")
        return {"stopped": stopped}

    @app.post("/api/resume")
    def resume(name: str):
        folder = runs_view.resolve(state.root, name)
        if runs_view.summary(state.root, folder)["status"] == "finished":
            raise WeitiaoError(f"run {name}: finished; there is nothing to resume")
        job, started = state.jobs.start("train", ["train", str(folder / "config.yaml"), "--resume"], str(folder))
        return {"job": job.as_dict(), "started": started}


def add_model_api(app, state) -> None:
    """Chat, preference pairs, export and serve: what is done with a finished run's model."""
    from fastapi.responses import StreamingResponse

    from weitiao.serving.engine import Sampling

    @app.post("/api/chat")
    def chat(request: dict):
        folder = runs_view.resolve(state.root, str(request.get("name", "")))
        prompt, which = str(request.get("prompt", "")), request.get("model", "tuned")
        if not prompt.strip() or which not in ("base", "tuned"):
            raise WeitiaoError("chat: give a prompt, and model base or tuned")
        engine = state.engine(folder)
        if which == "base" and engine.base_name is None:
            raise WeitiaoError(f"run {folder.name}: its model has no adapter to switch off, so there is no base model")
        ids = engine.encode(engine.render([{"role": "user", "content": prompt}]))
        pieces = engine.stream(ids, Sampling(max_new_tokens=integer(request, "max_tokens", 128, 1, 4096)),
                               engine.base_name if which == "base" else None)
        return StreamingResponse(pieces, media_type="text/plain; charset=utf-8")

    @app.post("/api/pair")
    def pair(request: dict):
        folder = runs_view.resolve(state.root, str(request.get("name", "")))
        prompt = str(request.get("prompt", ""))
        if request.get("from_test"):
            prompts = preferences.test_prompts(folder)
            if not prompts:
                raise WeitiaoError(f"run {folder.name}: no test predictions to take a prompt from; type one")
            prompt = state.rng.choice(prompts)
        other = None
        if request.get("mode") == "runs" and request.get("other"):
            other_folder = runs_view.resolve(state.root, str(request["other"]))
            other = (str(other_folder.relative_to(state.root)), state.engine(other_folder))
        made = preferences.make_pair(state.engine(folder), str(folder.relative_to(state.root)), prompt,
                                     str(request.get("mode", "")), integer(request, "max_tokens", 128, 1, 4096), state.rng,
                                     other)
        state.pairs[made.id] = made
        return {"id": made.id, "prompt": made.prompt, "A": made.answers["A"], "B": made.answers["B"]}

    @app.post("/api/prefer")
    def prefer(request: dict):
        made = state.pairs.get(str(request.get("id", "")))
        if made is None:
            raise WeitiaoError("pair: unknown or already answered; ask for a new pair")
        folder = runs_view.resolve(state.root, str(request.get("name", "")))
        counted = preferences.record(folder, made, str(request.get("choice", "")))
        state.pairs.pop(made.id, None)  # answered: a second click on it is refused
        return {"counts": counted, "sources": made.sources}

    add_ship_api(app, state)


def add_ship_api(app, state) -> None:
    """Train on the collected preferences, export, serve: jobs, as from the command line."""
    from weitiao.config import PAIR_TASKS

    @app.post("/api/train-preferences")
    def train_preferences(request: dict):
        folder = runs_view.resolve(state.root, str(request.get("name", "")))
        if preferences.counts(folder)["pairs"] < 1:
            raise WeitiaoError(f"run {folder.name}: no preference pairs recorded yet")
        task = request.get("task", "dpo")
        if task not in PAIR_TASKS:
            raise WeitiaoError(f"task: {task!r} is not one of {', '.join(PAIR_TASKS)}")
        data = {"task": task, "model": {"name_or_path": str(folder)},
                "data": {"format": "preference", "train": [str(folder / "preferences.jsonl")]},
                "method": {"name": "lora"}, "train": {"max_steps": integer(request, "max_steps", 10, 1, 100_000)},
                "eval": {"compare_base": False} if task == "reward" else {},
                "output": {"dir": str(state.root / f"{folder.name}-{task}")}}
        from weitiao.config import config_from_dict

        cfg = config_from_dict(data, "the preference training", base_dir=str(state.root))
        path = state.root / "configs" / f"{folder.name}-{task}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_form.as_yaml(data), encoding="utf-8")
        job, started = state.jobs.start("train", ["train", str(path)], cfg.output.dir)
        return {"job": job.as_dict(), "started": started, "run": Path(cfg.output.dir).name}

    @app.post("/api/export")
    def export(request: dict):
        folder = runs_view.resolve(state.root, str(request.get("name", "")))
        fmt = request.get("format", "hf")
        if fmt not in ("hf", "gguf"):
            raise WeitiaoError(f"format: {fmt!r} is not hf or gguf")
        out = state.root / "exports" / f"{folder.name}-{fmt}"
        args = ["export", str(folder), "--out", str(out), "--format", fmt] + (
            ["--quant", request["quant"]] if fmt == "gguf" and request.get("quant") else [])
        job, started = state.jobs.start("export", args, str(folder))
        return {"job": job.as_dict(), "started": started, "out": str(out)}

    @app.post("/api/serve")
    def serve(request: dict):
        folder = runs_view.resolve(state.root, str(request.get("name", "")))
        port = integer(request, "port", 8000, 1024, 65535)
        url = f"http://127.0.0.1:{port}/v1"
        job, started = state.jobs.start("serve", ["serve", str(folder), "--port", str(port)], str(folder), url)
        return {"job": job.as_dict(), "started": started, "url": url}
