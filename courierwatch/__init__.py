"""courierwatch: can the Apple devices at this site reach Apple? This room is the command line."""
