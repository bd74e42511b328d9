//! The rendered `main.tf.json` of every aws profile, with and without GPU workers, as reviewed
//! snapshots (`cargo insta review` after a change; the sandbox differs only in its backend and
//! provider block, which the unit tests check).

mod support;

use domain::spec::Provider;
use support::{PROFILES, model, profile_name, target};

#[test]
fn every_aws_profile_renders_as_its_snapshot() {
    for profile in PROFILES {
        for gpu in [false, true] {
            let name = format!(
                "aws_{}{}",
                profile_name(profile),
                if gpu { "_gpu" } else { "" }
            );
            let config = terraform_stack::render(target(), &model(Provider::Aws, profile, gpu));
            insta::assert_json_snapshot!(name, config);
        }
    }
}
