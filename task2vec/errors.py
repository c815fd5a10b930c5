"""Typed exceptions: every bad input raises one of these with a one-line message."""


class Task2VecError(ValueError):
    """Base class for all errors caused by bad input to task2vec."""


class DatasetError(Task2VecError):
    """The dataset (folder, CSV or torch Dataset) cannot be used as a task."""


class ImageError(DatasetError):
    """An image file cannot be decoded, or holds more pixels or a longer shape than the limits allow."""


class WeightsError(Task2VecError):
    """Probe weights are missing, unreadable or do not fit the architecture."""


class ProbeError(Task2VecError):
    """Unknown probe name or a probe the engine cannot handle."""


class EmbeddingFileError(Task2VecError):
    """A file that should hold a task embedding does not."""


class IncompatibleEmbeddingsError(Task2VecError):
    """Embeddings from different probes or methods were compared."""


class OutputPathError(Task2VecError):
    """An output path cannot be written."""


class ZooError(Task2VecError):
    """A zoo folder, its manifest or a change to it is invalid (missing, corrupt, duplicate or unknown id)."""


class RecordsError(Task2VecError):
    """Transfer records (task, model, measured error) are malformed or name unknown models or tasks."""


class SearchIndexError(Task2VecError):
    """A nearest-model index was built or queried with invalid arrays or settings."""


class FinetuneError(Task2VecError):
    """A fine-tuning setting, model name, auxiliary-label table or class grouping is invalid."""


class RunBusyError(FinetuneError):
    """Another fine-tune holds the run folder's lock."""


class CheckpointError(Task2VecError):
    """A file that should hold a task2vec fine-tuning checkpoint does not (missing, corrupt or foreign)."""


class SettingError(Task2VecError):
    """A number setting is not a finite number in its range (NaN, inf, a negative seed, a word)."""


class UsageError(Task2VecError):
    """The command line is malformed: an unknown command or flag, a missing or mistyped argument."""
