"""A deploy of the model stage alone (plan + model files), for the interrupted-sync test."""

from tasks.host_plan import plan_for_current_host
from tasks.model_files import model_files

model_files(plan_for_current_host())
