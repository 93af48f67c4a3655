"""The rig of a lab: its lab file (config), the hooks its surroundings need (hooks: nothing for a
physical lab, the simulation's for a virtual one), and the rig self-test (rig_check)."""
