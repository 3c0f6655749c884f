"""Videos of the agent playing: the first episode of chosen environments, as the agent sees it.

    recorder = EpisodeRecorder(video_dir, {row: "Breakout_v1"})   # row: an env of the Actor
    recorder.add(step) after every `actor.step(...)`; recorder.close() at the end

Each video holds the newest frame of every observation the agent acted on (84x84 grayscale,
the DQN protocol's frames, scaled up 4x without smoothing) at 15 frames per second: one frame
per agent step of 4 emulator frames at 60 Hz, so it plays at the game's speed. Written with
OpenCV as MP4 (`mp4v`) when the episode ends, or on `close` for an episode still running.
"""

import os

import cv2
import numpy as np

from scaled_ql.actor import Step

FPS = 15
SCALE = 4


class EpisodeRecorder:
  """Records the first episode of some environments of an `actor.Actor` batch."""

  def __init__(self, video_dir: str, names: dict[int, str]):
    """Prepares the directory.

    Args:
      video_dir: where the videos go (created if missing).
      names: env row of the Actor's batch -> file name stem (`{stem}.mp4`).
    """
    os.makedirs(video_dir, exist_ok=True)
    self._paths = {row: os.path.join(video_dir, f"{stem}.mp4") for row, stem in names.items()}
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
    height, width = (SCALE * n for n in frames[0].shape)
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writer = cv2.VideoWriter(self._paths[row], fourcc, FPS, (width, height), isColor=False)
    if not writer.isOpened():
      raise OSError(f"OpenCV cannot write {self._paths[row]} (no MP4 encoder in this build).")
    try:
      for frame in frames:
        writer.write(cv2.resize(frame, (width, height), interpolation=cv2.INTER_NEAREST))
    finally:
      writer.release()
    self.written.append(self._paths[row])
