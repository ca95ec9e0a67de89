//! Process hardening both services apply at start-up.

/// Marks this process non-dumpable (`PR_SET_DUMPABLE` 0): its `/proc/<pid>` files (`environ`,
/// `mem`, …) then belong to root, so another process of the same OS user — a workflow — can
/// neither read its environment (NATS credentials, the JWT secret) nor attach to it. Root is not
/// stopped by this; run the services as unprivileged users.
pub fn non_dumpable() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_becomes_non_dumpable() {
        super::non_dumpable().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
