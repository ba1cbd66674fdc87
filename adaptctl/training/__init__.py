"""What the Transformers Trainer lacks for adaptctl, put around it: arguments
from a recipe, logging and progress callbacks, signal handling, checkpoint
validation and non-finite loss detection."""
