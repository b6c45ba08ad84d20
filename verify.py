"""Check deployed services without changing anything: `pyinfra inventory/prod.py verify.py`.

Plans each host exactly as deploy.py does, then waits for /v1/models and a
one-token completion of every instance (showing the journal if a unit is dead),
and checks the gateway as a client would.
"""

from tasks.gateway import verify_gateway
from tasks.planning import plan_for_current_host
from tasks.verify import verify_instance

plan = plan_for_current_host()
for instance in plan.instances:
    verify_instance(instance)
if plan.gateway:
    verify_gateway(plan)
