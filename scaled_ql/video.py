"""Videos of the agent playing: the first episode of chosen environments, as the agent sees it.

    recorder = EpisodeRecorder(video_dir, {row: "Breakout_v1"})   # row: an env of the Actor
    recorder.add(step) after every `actor.step(...)`; recorder.close() at the end

    python -m scaled_ql.video --videos=pretrained=A.mp4,scratch=B.mp4 --output=frames.png
        # frames evenly spaced over each video, one labelled row per video (a PNG for a page)

Each video holds the newest frame of every observation the agent acted on (84x84 grayscale,
the DQN protocol's frames, scaled up 4x without smoothing) at 15 frames per second: one frame
per agent step of 4 emulator frames at 60 Hz, so it plays at the game's speed. Written with
OpenCV as MP4 (`mp4v`) when the episode ends, or on `close` for an episode still running.
OpenCV writes local files only: videos for a bucket (`gs://...`) are written to a local
temporary file, then copied there. Frame sheets read and write local files.
"""

import os
import tempfile
from collections.abc import Sequence

import cv2
import numpy as np
from etils import epath

from scaled_ql import runs
from scaled_ql.actor import Step

FPS = 15
SCALE = 4


class EpisodeRecorder:
  """Records the first episode of some environments of an `actor.Actor` batch."""

  def __init__(self, video_dir: str, names: dict[int, str]):
    """Prepares the directory.

    Args:
      video_dir: where the videos go (created if missing): a local path or a `gs://` URI.
      names: env row of the Actor's batch -> file name stem (`{stem}.mp4`).
    """
    epath.Path(video_dir).mkdir(parents=True, exist_ok=True)
    self._paths = {row: os.path.join(video_dir, f"{stem}.mp4") for row, stem in names.items()}
    self._local = not runs.is_uri(video_dir)
    self._frames: dict[int, list[np.ndarray]] = {row: [] for row in names}
    self.written: list[str] = []

  def add(self, step: Step) -> None:
    """Adds the step's frame of every env still recording; writes those whose episode ended."""
    for row, frames in list(self._frames.items()):
      if step.stepped[row]:
        frames.append(step.obs[row, :, :, -1].copy())  # [84, 84], the newest frame.
      if step.ended[row]:
        self._write(row)

  def close(self) -> None:
    """Writes the episodes still running (cut where the evaluation stopped)."""
    for row in list(self._frames):
      self._write(row)

  def _write(self, row: int) -> None:
    frames = self._frames.pop(row)
    if not frames:
      return
    if self._local:
      _write_mp4(self._paths[row], frames)
    else:
      with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(self._paths[row]))
        _write_mp4(local, frames)
        epath.Path(self._paths[row]).write_bytes(epath.Path(local).read_bytes())
    self.written.append(self._paths[row])


def _write_mp4(path: str, frames: Sequence[np.ndarray]) -> None:
  """Writes [84, 84] frames as an MP4 of `SCALE`x larger frames at `FPS` to a local `path`."""
  height, width = (SCALE * n for n in frames[0].shape)
  fourcc = cv2.VideoWriter_fourcc(*"mp4v")
  writer = cv2.VideoWriter(path, fourcc, FPS, (width, height), isColor=False)
  if not writer.isOpened():
    raise OSError(f"OpenCV cannot write {path} (no MP4 encoder in this build).")
  try:
    for frame in frames:
      writer.write(cv2.resize(frame, (width, height), interpolation=cv2.INTER_NEAREST))
  finally:
    writer.release()


def frame_sheet(videos: Sequence[tuple[str, str]], output: str, num_frames: int = 5) -> None:
  """Writes a PNG: one row per (label, video path), `num_frames` frames evenly spaced over it.

  Raises:
    ValueError: a video that cannot be read (missing, or not a video), named.
  """
  rows = []
  for label, path in videos:
    num = _frames(path, keep=())[1]  # Counted by decoding (an MP4's header count can be off).
    if not num:
      raise ValueError(f"{path}: no frames could be read (not a video written by this module?)")
    picks = np.linspace(0, num - 1, num_frames).round().astype(int)
    frames = _frames(path, keep=set(picks.tolist()))[0]  # Only the picked frames are kept.
    gap = np.full((frames[picks[0]].shape[0], 4), 255, np.uint8)
    strip = np.concatenate([part for i in picks for part in (frames[i], gap)][:-1], axis=1)
    title = np.full((28, strip.shape[1]), 255, np.uint8)
    text = f"{label}: frames {', '.join(str(i) for i in picks)} of {num}"
    cv2.putText(title, text, (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1, cv2.LINE_AA)
    rows.append(np.concatenate([title, strip]))
  width = max(row.shape[1] for row in rows)
  rows = [np.pad(row, ((0, 0), (0, width - row.shape[1])), constant_values=255) for row in rows]
  if not cv2.imwrite(output, np.concatenate(rows)):
    raise OSError(f"OpenCV cannot write {output}.")


def _frames(path: str, keep) -> tuple[dict[int, np.ndarray], int]:
  """({index: grayscale frame} for the indices in `keep`, number of frames) of a video."""
  capture = cv2.VideoCapture(path)
  kept, num = {}, 0
  try:
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      if num in keep:
        kept[num] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
      num += 1
  finally:
    capture.release()
  return kept, num


def main() -> None:
  """The CLI: a frame sheet of the videos named by --videos."""
  from absl import flags

  from scaled_ql import cli

  f = flags.FLAGS
  if f.num_frames < 1:
    raise cli.UserError(f"--num_frames={f.num_frames}: give at least 1.")
  videos = []
  for item in f.videos:
    label, sep, path = item.partition("=")
    if not sep or not os.path.isfile(path):
      raise cli.UserError(f"--videos item {item!r}: expected LABEL=PATH of an existing video.")
    videos.append((label, path))
  frame_sheet(videos, f.output, f.num_frames)
  print(f"Wrote {f.output}")


if __name__ == "__main__":
  from absl import app, flags

  from scaled_ql import cli

  flags.DEFINE_list("videos", None, "LABEL=PATH of each video, one row each.")
  flags.DEFINE_string("output", None, "The PNG to write.")
  flags.DEFINE_integer("num_frames", 5, "Frames per video.")
  flags.mark_flags_as_required(["videos", "output"])
  app.run(lambda argv: cli.run_main(main))
