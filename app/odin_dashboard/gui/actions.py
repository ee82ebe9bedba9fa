"""What the buttons, fields and sliders do. Mixed into DashboardApp (gui/app.py), which
owns the session, the chat, the view-model and the painter used here."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import dearpygui.dearpygui as dpg

from odin_dashboard.chat import ChatModel
from odin_dashboard.checkpoints import copy_checkpoint, place_for_resume
from odin_dashboard.gui.layout import T
from odin_dashboard.session import StartRequest
from odin_dashboard.tasks import BackgroundTask
from odin_dashboard.viewmodel.forms import (
    TrainForm, build_dataset_for, check_form, dataset_build_spec, dataset_status, describe_build_spec,
    form_with_preset,
)
from odin_dashboard.viewmodel.runfolder import (
    ExistingRun, continue_problem, existing_run, final_test_score, fresh_run_dir,
)


class Actions:
    # state provided by DashboardApp
    session: Any
    chat: Any
    vm: Any
    painter: Any
    loaded: Any
    form_dirty: bool
    reverse_answer: bool
    prompt_width: int
    total_steps: int
    pending_save: Any
    model_source: str
    tasks: dict[str, BackgroundTask]
    screenshot_dir: Path
    pacer: Any
    start_after_load: bool
    asked_run: Optional[ExistingRun]

    def post(self, message: str, level: str = "info") -> None: ...  # implemented by the app
    def request_screenshot(self, path: Path) -> None: ...
    def request_close(self) -> None: ...

    # ------------------------------------------------------------------ the form
    def read_form(self) -> TrainForm:
        return TrainForm(
            preset=dpg.get_value(T.PRESET), data_dir=dpg.get_value(T.DATA_DIR).strip(),
            run_dir=dpg.get_value(T.RUN_DIR).strip(), threads=int(dpg.get_value(T.THREADS)),
            # the field holds a float32: keep 6 digits so 2e-3 does not become 0.0020000000949949
            lr=float(f"{float(dpg.get_value(T.LR)):.6g}"), batch_size=int(dpg.get_value(T.BATCH)),
            steps=int(dpg.get_value(T.STEPS)), eval_every=int(dpg.get_value(T.EVAL_EVERY)),
            resume=bool(dpg.get_value(T.CONTINUE)) and self.can_continue_loaded(),
        )

    def can_continue_loaded(self) -> bool:
        return self.loaded is not None and continue_problem(self.loaded) is None

    def write_form(self, form: TrainForm) -> None:
        for tag, value in ((T.PRESET, form.preset), (T.DATA_DIR, form.data_dir), (T.RUN_DIR, form.run_dir),
                           (T.THREADS, form.threads), (T.LR, form.lr), (T.BATCH, form.batch_size),
                           (T.STEPS, form.steps), (T.EVAL_EVERY, form.eval_every), (T.CONTINUE, form.resume)):
            dpg.set_value(tag, value)
        self.on_form_changed()

    def base_config(self) -> Any:
        return self.loaded.run_config if self.loaded is not None else None

    def on_form_changed(self, *_: Any) -> None:
        self.form_dirty = True

    def on_preset(self, _sender: Any = None, preset: Optional[str] = None, _user: Any = None) -> None:
        form = form_with_preset(self.read_form(), preset or dpg.get_value(T.PRESET))
        dpg.set_value(T.CONTINUE, False)  # a new preset is a new model
        self.write_form(dataclasses.replace(form, resume=False))

    def on_threads(self, _sender: Any = None, value: Any = None, _user: Any = None) -> None:
        threads = int(value if value is not None else dpg.get_value(T.THREADS))
        if self.session.active:
            self.session.set_threads(threads)
            self.post(f"threads -> {threads} from the next step")

    def on_sphere_filter(self, _sender: Any = None, value: Any = None, _user: Any = None) -> None:
        choice = str(value if value is not None else dpg.get_value(T.SPHERE_FILTER))
        self.vm.show_sphere(None if choice.startswith("all") else int(choice.split("s")[-1]) - 1)

    def on_smoothing(self, _sender: Any = None, value: Any = None, _user: Any = None) -> None:
        self.vm.set_smoothing(float(value if value is not None else dpg.get_value(T.SMOOTHING)))

    def on_input(self, *_: Any) -> None:
        """Any key, click, wheel or mouse move: keep frames coming promptly for a while."""
        self.pacer.input_seen(time.monotonic())

    def on_log_loss(self, _sender: Any = None, value: Any = None, _user: Any = None) -> None:
        log = bool(value if value is not None else dpg.get_value(T.LOG_LOSS))
        for axis in (T.LOSS_Y, T.GLOBAL_Y):
            dpg.configure_item(axis, scale=dpg.mvPlotScale_Log10 if log else dpg.mvPlotScale_Linear)
        self.painter.log_loss = log
        self.painter.invalidate_plots()

    # ------------------------------------------------------------------ data
    def on_build_dataset(self, *_: Any) -> None:
        form = self.read_form()
        if "dataset" in self.tasks or not form.data_dir:
            return
        spec = dataset_build_spec(form.preset)
        self.tasks["dataset"] = BackgroundTask("dataset", build_dataset_for, Path(form.data_dir), spec)
        self.post(f"building {describe_build_spec(spec)} in {form.data_dir} ...")

    # ------------------------------------------------------------------ training
    def on_start(self, *_: Any) -> bool:
        return self.start_run()

    def start_run(self, *, overwrite: bool = False, unattended: bool = False) -> bool:
        """Start (or continue) training as the form says. A fresh start into a folder that
        holds a run asks first (the run dialog); unattended it takes a fresh folder name."""
        if self.session.active:
            return False
        form = self.read_form()
        check = check_form(form, self.base_config())
        if not check.ok or check.run_config is None:
            self.post(check.problems[0] if check.problems else "cannot start", "error")
            return False
        run_dir = Path(form.run_dir)
        if form.resume:
            try:
                place_for_resume(self.loaded.path, run_dir)
            except (OSError, ValueError) as error:
                self.post(str(error), "error")
                return False
        elif not overwrite:
            existing = existing_run(run_dir)
            if existing is not None and unattended:
                run_dir = fresh_run_dir(run_dir)
                dpg.set_value(T.RUN_DIR, str(run_dir))
                self.post(f"{existing.describe()}: training in {run_dir} instead")
            elif existing is not None:
                self.ask_about_run(existing)
                return False
        self.vm.reset_run()
        status = dataset_status(form.data_dir)
        self.reverse_answer, self.prompt_width = status.reverse_answer, status.prompt_width
        self.session.start(StartRequest(check.run_config, Path(form.data_dir), run_dir, form.threads,
                                        resume=form.resume, overwrite=overwrite and not form.resume))
        self.model_source = "session"
        if form.resume:  # continued: from now on the run folder's checkpoint is the newer one
            self.loaded = None
            dpg.set_value(T.CONTINUE, False)
        self.total_steps = check.run_config.train.steps
        self.screenshot_dir = run_dir
        dpg.set_value(T.CKPT_PATH, str(run_dir / "checkpoint"))
        if not (unattended and run_dir != Path(form.run_dir)):
            self.post("continuing from the checkpoint" if form.resume else
                      f"training started over in {run_dir}" if overwrite else "training started")
        return True

    # ------------------------------------------------------------------ the run dialog
    def ask_about_run(self, existing: ExistingRun) -> None:
        """Start would overwrite `existing`: ask what to do (nothing is touched until then)."""
        self.asked_run = existing
        problem = existing.continue_problem
        dpg.set_value(T.RUN_DIALOG_TEXT, f"{existing.describe()}. Starting a new run there would replace its "
                                         f"checkpoint and metrics.jsonl."
                      + (f"\nIt cannot be continued: {problem}." if problem else ""))
        dpg.configure_item(T.DIALOG_CONTINUE, enabled=problem is None,
                           label="Continue it" if problem is None else "Continue it (not possible)")
        dpg.configure_item(T.DIALOG_NEW, label=f"New folder: {fresh_run_dir(existing.folder)}")
        dpg.configure_item(T.RUN_DIALOG, show=True)

    def _close_dialog(self) -> Optional[ExistingRun]:
        dpg.configure_item(T.RUN_DIALOG, show=False)
        existing, self.asked_run = self.asked_run, None
        return existing

    def on_dialog_continue(self, *_: Any) -> None:
        existing = self._close_dialog()
        if existing is None or existing.continue_problem is not None:
            return
        dpg.set_value(T.CKPT_PATH, str(existing.folder / "checkpoint"))
        self.start_after_load = True  # loaded_checkpoint() starts it
        self.on_load()

    def on_dialog_overwrite(self, *_: Any) -> None:
        if self._close_dialog() is not None:
            self.start_run(overwrite=True)

    def on_dialog_new_folder(self, *_: Any) -> None:
        existing = self._close_dialog()
        if existing is not None:
            dpg.set_value(T.RUN_DIR, str(fresh_run_dir(existing.folder)))
            self.on_form_changed()
            self.start_run()

    def on_dialog_cancel(self, *_: Any) -> None:
        existing = self._close_dialog()
        if existing is not None:
            self.post(f"not started: {existing.folder} is kept as it is")

    def on_pause(self, *_: Any) -> None:
        self.session.pause()

    def on_resume(self, *_: Any) -> None:
        self.session.resume()

    def on_stop(self, *_: Any) -> None:
        self.session.stop()

    # ------------------------------------------------------------------ checkpoints
    def on_save(self, *_: Any) -> None:
        if self.session.active:
            if self.session.request_checkpoint():
                self.pending_save = (time.monotonic(), self.session.latest_checkpoint())
                self.post("checkpoint requested: written at the next step boundary")
            return
        source = self.current_checkpoint_dir()
        target = Path(dpg.get_value(T.CKPT_PATH).strip() or ".")
        if source is None:
            self.post("nothing to save: train or load a model first", "warn")
            return
        try:
            copy_checkpoint(source, target)
        except (OSError, ValueError) as error:
            self.post(f"could not save: {error}", "error")
            return
        self.post(f"checkpoint saved in {target}" if source.resolve() != target.resolve()
                  else f"checkpoint already saved in {target}")

    def current_checkpoint_dir(self) -> Optional[Path]:
        if self.model_source == "loaded" and self.loaded is not None:
            return Path(self.loaded.path)
        info = self.session.latest_checkpoint()
        return info.path if info is not None else None

    def on_load(self, *_: Any) -> None:
        from odin.checkpoint import load_model_checkpoint

        if self.session.active or "load" in self.tasks:
            return
        path = Path(dpg.get_value(T.CKPT_PATH).strip())
        # the weights alone: the chat needs no moments, and continuing resumes from the folder on disk
        self.tasks["load"] = BackgroundTask("load", lambda: load_model_checkpoint(path, with_optimizer=False))
        self.post(f"loading {path} ...")

    def loaded_checkpoint(self, loaded: Any) -> None:
        """A checkpoint finished loading: it becomes the chat model and, when the dashboard
        can continue it, the form continues it (its own settings; a pipeline model, an
        export or a finished run is only offered for the chat)."""
        self.loaded, self.model_source = loaded, "loaded"
        start = self.start_after_load
        self.start_after_load = False
        problem = continue_problem(loaded)
        if problem is not None:
            dpg.set_value(T.CONTINUE, False)
            self.on_form_changed()
            self.post(f"loaded {loaded.path} (step {loaded.step:,}); ask it below. It cannot be continued "
                      f"here: {problem}", "error" if start else "info")
            return
        config = loaded.run_config
        form = self.read_form()
        data_dir = loaded.trainer_state.get("data_dir") or form.data_dir
        run_dir = str(loaded.path.parent) if loaded.path.name == "checkpoint" else form.run_dir
        self.write_form(dataclasses.replace(
            form, preset=config.preset or form.preset, data_dir=str(data_dir), run_dir=run_dir,
            lr=config.train.lr, batch_size=config.train.batch_size, steps=config.train.steps,
            eval_every=config.train.eval_every, resume=True))
        self.total_steps = config.train.steps
        self.vm.final_test = final_test_score(loaded.path.parent) if loaded.path.name == "checkpoint" else None
        if start:
            self.form_dirty = True
            self.start_run()
            return
        self.post(f"loaded {loaded.path} (step {loaded.step:,}); ask it below or continue training it")

    # ------------------------------------------------------------------ chat
    def chat_model(self) -> Optional[ChatModel]:
        from odin.tokenizers import CharTokenizer

        trainer = self.session.trainer
        if self.model_source == "session" and trainer is not None and self.session.request is not None:
            step = trainer.snapshot().step
            return ChatModel(trainer.model, self.session.request.run_config, CharTokenizer(),
                             self.reverse_answer, f"training run, step {step:,}", self.prompt_width)
        if self.loaded is not None:
            return ChatModel(self.loaded.model, self.loaded.run_config, self.loaded.tokenizer,
                             self.loaded.reverse_answer, f"checkpoint step {self.loaded.step:,}",
                             self.loaded.prompt_width)
        return None

    def on_ask(self, *_: Any) -> None:
        problem = self.chat.ask(dpg.get_value(T.PROMPT), self.chat_model())
        if problem:
            self.post(problem, "warn")

    # ------------------------------------------------------------------ misc
    def on_screenshot(self, *_: Any) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.request_screenshot(self.screenshot_dir / f"dashboard-{stamp}.png")
