// libsystemd's service-manager protocol: sd_notify, sd_watchdog_enabled.
#include <systemd/sd-daemon.h>
