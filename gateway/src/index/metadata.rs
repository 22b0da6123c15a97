//! The two keys we need from `org.flatpak.metadata`, a GKeyFile.

/// `runtime=` and `sdk=` of the `[Application]` group, or of `[Runtime]` for a
/// runtime. Other groups (`[Extension ...]`, `[Context]`) are not looked at:
/// their keys mean something else.
pub(super) fn runtime_and_sdk(keyfile: &str) -> (Option<String>, Option<String>) {
    let mut runtime = None;
    let mut sdk = None;
    let mut in_main_group = false;
    for line in keyfile.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(group) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_main_group = matches!(group, "Application" | "Runtime");
            continue;
        }
        if !in_main_group {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let slot = match key.trim_end() {
            "runtime" => &mut runtime,
            "sdk" => &mut sdk,
            _ => continue,
        };
        // GKeyFile keeps the first of duplicated keys.
        if slot.is_none() {
            let value = value.trim_start();
            if !value.is_empty() {
                *slot = Some(value.to_owned());
            }
        }
    }
    (runtime, sdk)
}

#[cfg(test)]
mod tests {
    use super::runtime_and_sdk;

    #[test]
    fn application_group() {
        let md = "[Application]\nname=org.test.Hello\nruntime=org.test.Platform/x86_64/1\nsdk=org.test.Sdk/x86_64/1\ncommand=hello\n\n[Context]\nshared=network;\n";
        assert_eq!(
            runtime_and_sdk(md),
            (
                Some("org.test.Platform/x86_64/1".into()),
                Some("org.test.Sdk/x86_64/1".into())
            )
        );
    }

    #[test]
    fn runtime_group_and_spacing() {
        let md = "# comment\n[Runtime]\r\nname=org.test.Platform\r\nruntime = org.test.Platform/x86_64/1\r\n";
        assert_eq!(
            runtime_and_sdk(md),
            (Some("org.test.Platform/x86_64/1".into()), None)
        );
    }

    #[test]
    fn other_groups_are_ignored() {
        let md = "[Extension org.test.Ext]\nruntime=nope\nsdk=nope\n[Application]\nname=x\n";
        assert_eq!(runtime_and_sdk(md), (None, None));
        assert_eq!(runtime_and_sdk("runtime=outside/any/group"), (None, None));
    }
}
