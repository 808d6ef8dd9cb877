//! The fleet registry: every node that ships, with last-seen time, agent version and
//! GPU inventory.
