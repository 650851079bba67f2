"""The tracking backends: where runtime/tracking.py's points go.

Each backend is ``write(points, flush)`` and ``close()`` and imports its
library only when a run enables it ([tracking] in the config):

  TensorBoard  RUN_DIR/tensorboard/events.out.tfevents.*, written with the
               tensorboard package's own event-file writer and protobufs
               (no torch, no TensorFlow); scalars and PNG images
  W&B          wandb.init(dir=RUN_DIR, mode=tracking.wandb_mode); each tag is
               defined against its step axis (round, trainer_step, critic_step)
  MLflow       a run in tracking.mlflow_experiment at tracking.mlflow_uri
               (default sqlite:///RUN_DIR/mlflow.db); images are logged as artifacts
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config, to_toml

TENSORBOARD_DIR = "tensorboard"  # RUN_DIR/tensorboard: `tensorboard --logdir runs` finds every run


@dataclass(frozen=True)
class Point:
    tag: str
    step: int
    time: float  # wall-clock seconds of the event it comes from
    value: float | None = None  # a scalar, or
    png: bytes | None = None  # an image
    axis: str = "round"  # "round" | "trainer_step" | "critic_step": what `step` counts


class TensorBoardBackend:
    def __init__(self, logdir: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.writer = EventFileWriter(str(logdir), flush_secs=5)

    def write(self, points: list[Point], flush: bool = True) -> None:
        for p in points:
            if p.png is not None:
                width, height = _png_size(p.png)
                value = self._summary.Value(tag=p.tag, image=self._summary.Image(
                    height=height, width=width, colorspace=4, encoded_image_string=p.png))
            else:
                value = self._summary.Value(tag=p.tag, simple_value=p.value)
            self.writer.add_event(self._event(wall_time=p.time, step=p.step, summary=self._summary(value=[value])))
        if flush and points:
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk (bytes 16-24, big-endian)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


class WandbBackend:
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        import tomllib

        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=cfg.tracking.wandb_project, name=run_dir.name, dir=str(run_dir),
                              mode=cfg.tracking.wandb_mode, config=tomllib.loads(to_toml(cfg)), reinit="create_new")
        self._defined: set[str] = set()

    def write(self, points: list[Point], flush: bool = True) -> None:
        for p in points:
            if p.tag not in self._defined:  # each tag on its own step axis
                self.run.define_metric(p.axis, hidden=True)
                self.run.define_metric(p.tag, step_metric=p.axis)
                self._defined.add(p.tag)
            value = p.value if p.png is None else self.wandb.Image(_pil(p.png), caption=p.tag)
            self.run.log({p.axis: p.step, p.tag: value})

    def close(self) -> None:
        self.run.finish()


def _pil(png: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(png))


class MlflowBackend:
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        from mlflow import MlflowClient

        uri = cfg.tracking.mlflow_uri or f"sqlite:///{(run_dir / 'mlflow.db').absolute()}"
        self.client = MlflowClient(tracking_uri=uri)
        name = cfg.tracking.mlflow_experiment
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=run_dir.name).info.run_id
        self.client.log_text(self.run_id, to_toml(cfg), "config.toml")

    def write(self, points: list[Point], flush: bool = True) -> None:
        for p in points:
            if p.png is not None:
                self.client.log_image(self.run_id, _pil(p.png), key=p.tag.replace("/", "."), step=p.step)
            else:
                self.client.log_metric(self.run_id, p.tag, p.value, timestamp=int(p.time * 1000), step=p.step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def open_backends(cfg: Config, run_dir: Path, only: set[str] | None = None) -> list[Any]:
    """The backends the config enables (``only``: of those, these names).
    A library that is missing or fails to start is skipped with a warning: a
    run never stops for its tracking."""
    import logging

    os.environ.setdefault("WANDB_SILENT", "true")
    t = cfg.tracking
    wanted = [name for name, on in (("tensorboard", t.tensorboard), ("wandb", t.wandb), ("mlflow", t.mlflow))
              if on and (only is None or name in only)]
    makers = {"tensorboard": lambda: TensorBoardBackend(run_dir / TENSORBOARD_DIR),
              "wandb": lambda: WandbBackend(cfg, run_dir), "mlflow": lambda: MlflowBackend(cfg, run_dir)}
    backends = []
    for name in wanted:
        try:
            backends.append(makers[name]())
        except Exception as e:  # ImportError included: pip install -e ".[tracking]"
            logging.getLogger("tracking").warning("tracking: %s is off (%s: %s)", name, type(e).__name__, e)
    return backends
