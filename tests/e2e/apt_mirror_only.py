"""A deploy of the apt mirror stage alone (settings -> apt sources), for the mirror end-to-end test.

The whole deploy would also install vLLM; the mirror switch is the part worth proving on a real
apt, and it is the first thing every runtime's install stage runs.
"""

from pyinfra import host

from facts import pyinfra_facts as fact
from tasks.apt_mirror import apt_mirror
from tasks.planning import plan_apt_sources, settings_of

apt_mirror(plan_apt_sources(settings_of(host.data.dict()).apt_mirror, host.get_fact(fact.OsRelease)))
