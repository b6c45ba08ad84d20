"""A deploy of the model stage alone (plan + model files), for the interrupted-sync test."""

from tasks.model_files import model_files
from tasks.planning import plan_for_current_host

model_files(plan_for_current_host())
