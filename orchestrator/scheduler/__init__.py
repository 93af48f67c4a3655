"""Every persona's night at the time its schedule says, with APScheduler, unattended for weeks."""
