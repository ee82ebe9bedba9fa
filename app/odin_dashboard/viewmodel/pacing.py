"""How long the render loop waits between frames (no GUI import, unit-tested).

Drawing a frame costs ~1 ms with a GPU but ~40-150 ms under Xvfb or any software
OpenGL, more while the trainer's threads hold the cores. When nobody is touching the
window the loop stretches its frame interval so that drawing takes at most
`render_share` of one core (up to `max_interval`): the trainer keeps the CPU. But input
is only seen when a frame is drawn, so that interval is also how long a key press waits:
at 0.5 s per frame, ten typed characters took ~6 s. So the pacer drops the stretch while
the user is active: frames are drawn back to back (capped at `fps`) for `active_seconds`
after any key, click, wheel or mouse move, and at least every `editing_interval` while a
text field has the keyboard (so the first key after a pause is not held for 0.5 s), for
up to `editing_seconds` after the last input (a field left focused for minutes does not
keep the window drawing at 20 fps).
"""
from __future__ import annotations


class FramePacer:
    def __init__(self, fps: float = 30.0, render_share: float = 0.2, max_interval: float = 0.5,
                 active_seconds: float = 2.0, editing_interval: float = 0.05,
                 editing_seconds: float = 60.0) -> None:
        if fps <= 0 or not 0 < render_share <= 1:
            raise ValueError(f"fps must be > 0 and render_share in (0, 1], got fps={fps}, "
                             f"render_share={render_share}")
        self.min_interval = 1.0 / fps
        self.render_share = render_share
        self.max_interval = max(self.min_interval, max_interval)
        self.active_seconds = active_seconds
        self.editing_interval = max(self.min_interval, editing_interval)
        self.editing_seconds = editing_seconds
        self.render_seconds = 0.0  # moving average of one frame's drawing time
        self.last_input = float("-inf")

    def rendered(self, seconds: float) -> None:
        """A frame took `seconds` to draw."""
        self.render_seconds += 0.1 * (seconds - self.render_seconds)

    def input_seen(self, now: float) -> None:
        """The user pressed a key, clicked, scrolled or moved the mouse over the window."""
        self.last_input = now

    def active(self, now: float) -> bool:
        return now - self.last_input < self.active_seconds

    @property
    def idle_interval(self) -> float:
        """Frame interval when nobody interacts: drawing stays under render_share of a core."""
        return min(self.max_interval, max(self.min_interval, self.render_seconds / self.render_share))

    def interval(self, now: float, editing: bool = False) -> float:
        """Seconds from the start of one frame to the start of the next."""
        if self.active(now):
            return self.min_interval  # a frame that draws slower than this is simply not followed by a sleep
        if editing and now - self.last_input < self.editing_seconds:
            return min(self.idle_interval, self.editing_interval)
        return self.idle_interval

    def sleep_before_next(self, now: float, frame_started: float, editing: bool = False) -> float:
        """How long to sleep now, in a frame that started at `frame_started`."""
        return max(0.0, self.interval(now, editing) - (now - frame_started))
