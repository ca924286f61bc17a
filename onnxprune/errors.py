"""Errors with a one-line message and a documented exit code.

Every failure a user can cause is an :class:`OnnxPruneError`; the CLI prints its
message on one line and exits with its ``exit_code``. Anything else is a bug and
exits with :data:`EXIT_INTERNAL`.
"""

EXIT_INTERNAL = 1
EXIT_USAGE = 2  # click's own code for bad options
EXIT_INPUT = 3  # input file missing or unreadable
EXIT_INVALID_MODEL = 4  # not an ONNX model, truncated, fails onnx.checker
EXIT_UNSUPPORTED = 5  # opset or feature outside what onnxprune supports
EXIT_NOTHING_PRUNABLE = 6
EXIT_BAD_ARGUMENT = 7  # option values out of range, output path == input path
EXIT_OUTPUT = 8  # output cannot be written
EXIT_PLAN = 9  # plan does not match the model
EXIT_VERIFY = 10  # the pruned model failed verification (never written)
EXIT_DATA = 11  # calibration/validation data does not fit the model
EXIT_VALIDATION = 12  # the pruned model misses the accuracy budget or tolerances
EXIT_CLUSTER = 13  # --ray: ray not installed, the cluster cannot be reached, or it failed during the run

EXIT_CODES = {
    EXIT_INTERNAL: "internal error (a bug: please report it with --debug output)",
    EXIT_USAGE: "bad command-line usage",
    EXIT_INPUT: "input file missing or unreadable",
    EXIT_INVALID_MODEL: "input is not a valid ONNX model",
    EXIT_UNSUPPORTED: "model uses something onnxprune does not support",
    EXIT_NOTHING_PRUNABLE: "the model has no prunable channel group",
    EXIT_BAD_ARGUMENT: "an option value is out of range or inconsistent",
    EXIT_OUTPUT: "the output cannot be written",
    EXIT_PLAN: "the plan does not match the model",
    EXIT_VERIFY: "the pruned model failed verification and was not written",
    EXIT_DATA: "the calibration/validation data does not fit the model",
    EXIT_VALIDATION: "the pruned model misses the accuracy budget or tolerances (not written without --force)",
    EXIT_CLUSTER: "the Ray cluster (--ray) cannot be used: ray not installed, unreachable, or failed during the run",
}


class OnnxPruneError(Exception):
    """A user-facing error: one line of text and an exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(OnnxPruneError):
    exit_code = EXIT_INPUT


class InvalidModelError(OnnxPruneError):
    exit_code = EXIT_INVALID_MODEL


class UnsupportedModelError(OnnxPruneError):
    exit_code = EXIT_UNSUPPORTED


class NothingPrunableError(OnnxPruneError):
    exit_code = EXIT_NOTHING_PRUNABLE


class BadArgumentError(OnnxPruneError):
    exit_code = EXIT_BAD_ARGUMENT


class OutputError(OnnxPruneError):
    exit_code = EXIT_OUTPUT


class PlanError(OnnxPruneError):
    exit_code = EXIT_PLAN


class VerificationError(OnnxPruneError):
    exit_code = EXIT_VERIFY


class DataError(OnnxPruneError):
    exit_code = EXIT_DATA


class ValidationFailed(OnnxPruneError):
    exit_code = EXIT_VALIDATION


class ClusterError(OnnxPruneError):
    exit_code = EXIT_CLUSTER
