//! The tuner against the real kernel: in enforce mode a listen storm on a server
//! that asked for more than somaxconn, in an opted-in test namespace, makes
//! `nettune run` raise that namespace's somaxconn (within the ceiling) and only
//! that one; `nettune rollback` restores it, twice safely; after a SIGKILL
//! mid-run, rollback still restores every value. Every change is judged: a raise
//! waits for the server to listen again (`no_effect_yet`) and is `effective` once
//! the overflows stop; a conntrack raise that does not stop the drops is
//! `ineffective` and not repeated.
//!
//! One file per concern: `config` (the tests' enforce config and the storms they
//! share), `rollback`, `apply` (`nettune apply`), `viewer` (`nettune top`),
//! `verdicts` (how each change is judged), `namespace` (a write reaches the
//! namespace that was found, or none; a namespace keeps its identity when one
//! of its marks goes).

mod apply;
pub mod config;
mod namespace;
mod rollback;
mod sigkill;
mod verdicts;
mod viewer;
mod writers;

use bpf_tests::harness::Test;

pub use config::TestConfig;

pub const TESTS: &[Test] = &[
    Test {
        name: "tuning::a_write_never_lands_in_a_namespace_that_replaced_the_one_found",
        run: namespace::a_write_never_lands_in_a_namespace_that_replaced_the_one_found,
    },
    Test {
        name: "tuning::a_namespace_whose_last_process_exits_is_still_the_one_rollback_restores",
        run: namespace::a_namespace_whose_last_process_exits_is_still_the_one_rollback_restores,
    },
    Test {
        name: "tuning::enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores",
        run: rollback::enforce_raises_somaxconn_in_the_storming_namespace_and_rollback_restores,
    },
    Test {
        name: "tuning::sigkill_at_every_step_of_a_change_leaves_what_rollback_restores",
        run: sigkill::sigkill_at_every_step_of_a_change_leaves_what_rollback_restores,
    },
    Test {
        name: "tuning::after_sigkill_rollback_restores_every_value",
        run: rollback::after_sigkill_rollback_restores_every_value,
    },
    Test {
        name: "tuning::apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again",
        run: apply::apply_reserves_node_ports_before_widening_and_rollback_empties_the_list_again,
    },
    Test {
        name: "tuning::a_viewer_with_an_enforce_config_never_writes",
        run: viewer::a_viewer_with_an_enforce_config_never_writes,
    },
    Test {
        name: "tuning::a_rollback_next_to_the_running_daemon_is_never_undone_by_it",
        run: rollback::a_rollback_next_to_the_running_daemon_is_never_undone_by_it,
    },
    Test {
        name: "tuning::a_raise_has_no_effect_until_the_server_listens_again_then_is_effective",
        run: verdicts::a_raise_has_no_effect_until_the_server_listens_again_then_is_effective,
    },
    Test {
        name: "tuning::a_conntrack_raise_that_does_not_stop_the_drops_is_ineffective_and_not_repeated",
        run:
            verdicts::a_conntrack_raise_that_does_not_stop_the_drops_is_ineffective_and_not_repeated,
    },
    Test {
        name: "tuning::kube_proxy_lowering_nf_conntrack_max_is_named_counted_and_advised",
        run: writers::kube_proxy_lowering_nf_conntrack_max_is_named_counted_and_advised,
    },
    Test {
        name: "tuning::with_the_guard_kube_proxy_cannot_lower_nf_conntrack_max_and_rollback_still_can",
        run:
            writers::with_the_guard_kube_proxy_cannot_lower_nf_conntrack_max_and_rollback_still_can,
    },
    Test {
        name: "tuning::audit_shows_what_kube_proxy_will_set_at_its_start",
        run: writers::audit_shows_what_kube_proxy_will_set_at_its_start,
    },
];
