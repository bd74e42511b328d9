//! The rendered `main.tf.json` of every aws profile, with and without GPU workers, as reviewed
//! snapshots (`cargo insta review` after a change; the sandbox differs only in its backend and
//! provider block, which the unit tests check).

mod support;

use domain::spec::Provider;
use support::{every_model, target};

#[test]
fn every_aws_profile_renders_as_its_snapshot() {
    let aws: Vec<_> = every_model()
        .into_iter()
        .filter(|(_, model)| model.provider == Provider::Aws)
        .collect();
    assert_eq!(aws.len(), 6, "small, medium, large, with and without GPU");
    for (name, model) in aws {
        insta::assert_json_snapshot!(name, terraform_stack::render(target(), &model));
    }
}
