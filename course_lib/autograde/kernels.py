"""Kernels started inside the current submission's ``Jail`` (see ``_sandbox``).

- ``JailedKernelManager``: jupyter_client's kernel manager, launching the kernel through
  ``Jail.wrap`` with ``Jail.kernel_env`` (plain behaviour outside a jail).
- ``JailedExecute``: nbgrader's Execute step with those kernels; it tells the jail which cell
  runs and which cells hit their time limit, and skips the cells the jail says to skip.

This module imports jupyter_client and nbgrader (seconds); ``preprocessors`` imports it only
when a course is graded.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbgrader.preprocessors import Execute

from course_lib.autograde._sandbox import current_jail


class JailedKernelManager(AsyncKernelManager):
    """Starts the kernel inside the current ``Jail`` (plain behaviour when there is none)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        jail = current_jail()
        if jail is not None:
            self.transport = "ipc"  # a Unix socket in the jail: the kernel has no network
            self.ip = str(jail.ipc / "k")
            self.connection_file = str(jail.ipc / "kernel.json")

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        jail = current_jail()
        if jail is not None:
            kernel_cmd = jail.wrap(kernel_cmd)
            kw["env"] = jail.kernel_env(kw.get("env"))
            if jail.unsafe:
                kw["cwd"] = str(jail.home)
        await super()._async_launch_kernel(kernel_cmd, **kw)
        if jail is not None and getattr(self.provisioner, "process", None) is not None:
            jail.kernels.append(self.provisioner.process)

    async def _async_interrupt_kernel(self) -> None:
        if current_jail() is None or not self.has_kernel:
            return await super()._async_interrupt_kernel()
        # A signal to the sandbox's outer process would not reach the kernel: ask the
        # kernel itself (ipykernel raises KeyboardInterrupt in the running cell).
        msg = self.session.msg("interrupt_request", content={})
        self._connect_control_socket()
        self.session.send(self._control_socket, msg)

    interrupt_kernel = _async_interrupt_kernel  # jupyter_client binds the base one


class JailedExecute(Execute):
    """nbgrader's Execute with kernels started by ``JailedKernelManager``.

    Tells the current ``Jail`` which cell runs (so a cell that kills the kernel can be
    skipped on a second try) and which cells hit their time limit (so that a
    ``KeyboardInterrupt`` the learner raised is not mistaken for one); skips the cells the
    jail says to skip, and every cell once the notebook's own time limit is spent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["kernel_manager_class"] = JailedKernelManager
        super().__init__(*args, **kwargs)

    async def async_execute_cell(
        self, cell: Any, cell_index: int, *args: Any, **kwargs: Any
    ) -> Any:
        jail = current_jail()
        if jail is None or cell.cell_type != "code":
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        if jail.started is None:
            jail.started = time.monotonic()
        spent = time.monotonic() - jail.started
        why = ""
        if cell_index in jail.skip:
            why = "this cell stopped the kernel on the first run, so it was skipped"
        elif jail.notebook_timeout is not None and spent > jail.notebook_timeout:
            why = f"not run: the notebook's time limit ({jail.notebook_timeout:g} s) was spent"
        if why:
            import nbformat

            jail.not_run.append(cell_index)
            cell.outputs = [
                nbformat.v4.new_output(
                    "error", ename="NotRun", evalue=why, traceback=[f"NotRun: {why}"]
                )
            ]
            return cell
        jail.running = cell_index
        jail.running_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        out = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        jail.running = None
        return out

    execute_cell = run_sync(async_execute_cell)  # nbclient binds the base class's one

    async def _async_handle_timeout(self, timeout: int, cell: Any = None) -> Any:
        jail = current_jail()
        if jail is not None and cell is not None:
            jail.timed_out.add(cell.metadata.get("nbgrader", {}).get("grade_id", ""))
        return await super()._async_handle_timeout(timeout, cell)
