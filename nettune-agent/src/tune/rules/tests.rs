//! The rule table itself: every rule once, documented, in the README.

use super::*;

#[test]
fn every_rule_is_listed_once_with_its_problem_and_the_sysctls_it_may_change() {
    let mut names = std::collections::BTreeSet::new();
    for rule in ALL {
        assert!(names.insert(rule.name), "{} twice", rule.name);
        assert!(!rule.problem.is_empty() && !rule.evidence_name.is_empty());
        for sysctl in rule.sysctls {
            assert!(
                crate::model::tunables::lookup(sysctl.name).is_ok(),
                "{}: {}",
                rule.name,
                sysctl.name
            );
        }
        assert_eq!(
            rule.sysctls.is_empty(),
            rule.when_ineffective.is_empty(),
            "{}: a rule that changes something says what to do when it does not help",
            rule.name
        );
    }
}

#[test]
fn the_readme_lists_every_rule() {
    let readme = include_str!("../../../../README.md");
    for rule in ALL {
        assert!(
            readme.contains(&format!("| `{}` |", rule.name)),
            "README.md does not list the rule {}",
            rule.name
        );
    }
}
