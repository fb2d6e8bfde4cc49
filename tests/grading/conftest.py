"""Grader tests: print the per-exercise table of caught buggy implementations at the end."""

from grading_results import CATCH_TABLE


def pytest_terminal_summary(terminalreporter):
    if CATCH_TABLE:
        terminalreporter.section("grading: buggy implementations caught per exercise")
        for line in CATCH_TABLE:
            terminalreporter.write_line(line)
