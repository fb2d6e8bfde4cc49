"""nbgrader configuration of "LLMs from the ground up".

The course root is the folder holding this file, wherever nbgrader is started from, so
plain ``nbgrader ...`` commands and ``course release|validate|grade`` agree on every path.

    solutions/<assignment>/<assignment>.ipynb   source (full solutions, hidden tests)
    notebooks/<assignment>/<assignment>.ipynb   release (stubs, no hidden tests), committed
    submitted/ autograded/ feedback/ gradebook.db exchange/ .grading_seed   git-ignored

Prefer ``course release`` to ``nbgrader generate_assignment``: both use this file, but only
the former strips volatile metadata so that regenerated notebooks give an empty ``git diff``.
"""

import os

c = get_config()  # noqa: F821 -- injected by traitlets when it loads this file

root = os.path.dirname(os.path.abspath(__file__))

# --- where things live -------------------------------------------------------------------
c.CourseDirectory.root = root
c.CourseDirectory.course_id = "llms-from-the-ground-up"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(root, "gradebook.db")
# A shared exchange (JupyterHub, several users) can be set with COURSE_EXCHANGE.
c.Exchange.root = os.environ.get("COURSE_EXCHANGE", os.path.join(root, "exchange"))

# --- generating the release --------------------------------------------------------------
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# --- autograding ---------------------------------------------------------------------------
# Per-cell limit. Most check cells take a few seconds; 06's capstone trains a GPT in its check
# cell (about 100 s on 2 idle cores), and 300 s leaves room for a slow laptop.
# On timeout the kernel is interrupted (the cell scores 0, the rest of the notebook runs); a
# kernel that ignores the interrupt is killed and the submission is reported as failed.
c.ExecutePreprocessor.timeout = 300
c.Execute.interrupt_on_timeout = True
c.Execute.shutdown_kernel = "immediate"
# Grading kernels log errors only (not the "running over TCP without encryption" notice).
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
# A deleted check cell is put back (and graded) instead of silently losing its points.
c.OverwriteCells.add_missing_cells = True

# --- course_lib's additions (also for formgrader and plain `nbgrader` commands) -------------
# - A check cell that writes to stderr (a warning, a progress bar) keeps its points: our
#   checks fail by raising, but nbgrader would score any stderr output as a failure.
# - Feedback HTML must not show hidden tests (nbgrader's default does, with the tracebacks
#   that quote them): strip them before rendering.
try:
    from course_lib.autograde.preprocessors import StripHiddenTests, autograde_preprocessors
except ImportError:  # course_lib is not installed in the environment running nbgrader
    pass
else:
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades

    c.Autograde.autograde_preprocessors = autograde_preprocessors()
    c.GenerateFeedback.preprocessors = [GetGrades, StripHiddenTests, CSSHTMLHeaderPreprocessor]
