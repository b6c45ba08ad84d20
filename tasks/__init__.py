"""pyinfra stages that turn a ServicePlan into changes: install, model, service, verify.

Each stage is a packaged deploy taking the plan; none of them decides anything
the plan has not already decided.
"""
