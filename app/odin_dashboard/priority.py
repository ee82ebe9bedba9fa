"""The training thread yields the CPU to the window: it raises its own nice value.

Under software OpenGL (Xvfb, a VM without a GPU) a frame is tens of milliseconds of CPU
on the GUI thread, and while the trainer's workers hold every core at the same priority
the GUI thread waits its turn for each of them: a typed key took ~160 ms to show on a
2-core machine. Linux schedules threads, not processes, and a thread inherits its nice
value from the thread that creates it; the spheres trainer spawns its worker threads
from the thread that runs training (csrc/spheres.c, apply_threads), so raising the nice
value of that one thread before training lowers every worker too, and the GUI thread
(nice unchanged) runs first whenever it has a frame to draw. When the GUI sleeps the
workers get the cores as before. The value dies with the thread: nothing to restore,
and the next run starts a fresh thread. Raising nice needs no privilege.
"""
from __future__ import annotations

import os
import sys
import threading

TRAINER_NICE_INCREMENT = 10  # CFS weight 110 vs 1024: the GUI thread gets ~90% of a contended core
MAX_NICE = 19


def thread_nice(native_id: int) -> int:
    """The nice value of one thread of this process (Linux: a thread id is a task id)."""
    return os.getpriority(os.PRIO_PROCESS, native_id)


def lower_this_thread_priority(increment: int = TRAINER_NICE_INCREMENT) -> bool:
    """Raise the calling thread's nice value by `increment` (at most to 19). Only on Linux,
    where PRIO_PROCESS with a thread id names that thread alone (elsewhere it would name
    the whole process, the window included). False where nothing was changed."""
    if not sys.platform.startswith("linux") or increment <= 0:
        return False
    native_id = threading.get_native_id()
    try:
        current = thread_nice(native_id)
        os.setpriority(os.PRIO_PROCESS, native_id, min(MAX_NICE, current + increment))
    except OSError:  # a sandbox that forbids it: training runs at normal priority
        return False
    return True
