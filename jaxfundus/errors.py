"""The errors a user can cause and fix; the CLI prints them as one line without a traceback."""

from jaxfundus.config import ConfigError
from jaxfundus.data.images import ImageError
from jaxfundus.data.top_source import DataError
from jaxfundus.models.pretrained import WeightsError
from jaxfundus.run_lock import RunLocked
from jaxfundus.train.checkpoint import CheckpointError
from jaxfundus.train.loop import TrainingDiverged

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, ImageError, TrainingDiverged,
                                            CheckpointError, RunLocked, WeightsError,
                                            FileNotFoundError)
