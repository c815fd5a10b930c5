"""task2vec: embed image-classification tasks and pick the backbone to fine-tune."""

__version__ = "0.1.0"

from .distance import symmetric  # noqa: E402
from .embed import METHODS, Task2Vec  # noqa: E402
from .embedding import Embedding, check_compatible  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    DatasetError,
    EmbeddingFileError,
    FinetuneError,
    IncompatibleEmbeddingsError,
    OutputPathError,
    ProbeError,
    RecordsError,
    SearchIndexError,
    Task2VecError,
    WeightsError,
    ZooError,
)
from .probe import Probe  # noqa: E402
from .recommendation import Recommendation, recommend  # noqa: E402
from .zoo import Zoo  # noqa: E402

__all__ = [
    "__version__", "Task2Vec", "Probe", "Zoo", "recommend", "Recommendation", "Embedding", "METHODS", "symmetric",
    "check_compatible",
    "Task2VecError", "DatasetError", "WeightsError", "ProbeError", "EmbeddingFileError",
    "IncompatibleEmbeddingsError", "OutputPathError", "ZooError", "RecordsError", "SearchIndexError",
    "FinetuneError", "CheckpointError",
]
