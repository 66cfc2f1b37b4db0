//! Generators: a NixOps4 provider module and a Markdown reference page, both
//! from a [`ProviderSchema`] (what `<provider> --schema` prints).
//!
//! The Nix module has the shape of NixOps4's own `nix/providers/local.nix`:
//! `name`, `description`, `sourceBaseUrl`, `sourceName`, `executable`, and
//! `resourceTypes.<type>` with `description`, `requireState`,
//! `inputs.options` and `outputs.options` made of `mkOption`s. It is a function of the package that provides the
//! executable, so a flake applies it to its own packages:
//!
//! ```nix
//! modules.nixops4Provider.ssh-key =
//!   import ./nix/providers/ssh-key.nix { package = system: self.packages.${system}.ssh-key; };
//! ```

use std::fmt::Write as _;

use serde_json::Value;

use crate::schema::{
    ProviderSchema, ResourceTypeSchema, describe_type, enum_values, nullable_inner, resolve,
};

/// The generated modules' `sourceBaseUrl`: NixOps4's `renderProviderDocs`
/// requires it (nixops4 `nix/provider/provider-doc.nix`, a string) and
/// appends a declaration's path below the flake's source to it to link an
/// option to its source, as `local.nix` does with `.../tree/main`. This
/// workspace's `repository` (Cargo.toml), so there is one place to change.
pub const SOURCE_BASE_URL: &str = env!("CARGO_PKG_REPOSITORY");

/// The generated modules' `sourceName`: the display text of those links
/// (nixops4 `provider-doc.nix`; `local.nix` has `"nixops4"`), this flake's
/// name as the READMEs use it as an input.
pub const SOURCE_NAME: &str = "fediversity-providers";

/// The Nix provider module for `schema`.
pub fn nix_module(schema: &ProviderSchema) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated from `{exe} --schema` by `fedi-resource-runner generate`.\n\
         # Do not edit: change the provider's Rust types and regenerate.\n\
         {{ package }}:\n\
         {{ lib, resourceProviderSystem, ... }}:\n\
         let\n  inherit (lib) mkOption types;\nin\n{{",
        exe = schema.executable
    );
    let _ = writeln!(out, "  name = {};", nix_string(&schema.name));
    let _ = writeln!(
        out,
        "  description = {};",
        nix_long_string(&schema.description, 2)
    );
    let _ = writeln!(out, "  sourceBaseUrl = {};", nix_string(SOURCE_BASE_URL));
    let _ = writeln!(out, "  sourceName = {};", nix_string(SOURCE_NAME));
    let _ = writeln!(
        out,
        "  executable = \"${{package resourceProviderSystem}}/bin/{}\";",
        nix_string_body(&schema.executable)
    );
    let _ = writeln!(out, "  resourceTypes = {{");
    for (name, resource) in &schema.resource_types {
        let _ = writeln!(out, "    {} = {{", nix_attr_name(name));
        let _ = writeln!(
            out,
            "      description = {};",
            nix_long_string(&resource_description(resource), 6)
        );
        let _ = writeln!(out, "      requireState = {};", resource.require_state);
        for (section, schema) in [("inputs", &resource.inputs), ("outputs", &resource.outputs)] {
            let _ = writeln!(out, "      {section} = {{");
            let _ = write!(out, "        options = ");
            out.push_str(&nix_options(schema, schema, 8, section == "inputs"));
            out.push_str(";\n      };\n");
        }
        let _ = writeln!(out, "    }};");
    }
    out.push_str("  };\n}\n");
    out
}

/// The description, plus which extension operations the type supports.
fn resource_description(resource: &ResourceTypeSchema) -> String {
    let mut operations = Vec::new();
    if resource.operations.delete {
        operations.push("delete (`xDeleteResourceRequest`)");
    }
    if resource.operations.read {
        operations.push("read (`xReadResourceRequest`)");
    }
    if resource.operations.state_storage {
        operations.push("state storage");
    }
    if operations.is_empty() {
        resource.description.clone()
    } else {
        format!(
            "{}\n\nSupports, beyond NixOps4 v0: {}.",
            resource.description,
            operations.join(", ")
        )
    }
}

/// `{ a = mkOption {...}; ... }` for an object schema.
fn nix_options(root: &Value, object: &Value, indent: usize, with_defaults: bool) -> String {
    let object = resolve(root, object);
    let properties = object.get("properties").and_then(Value::as_object);
    let Some(properties) = properties.filter(|p| !p.is_empty()) else {
        return "{ }".to_string();
    };
    let required = required_set(object);
    let pad = " ".repeat(indent);
    let mut out = String::from("{\n");
    for (name, property) in properties {
        let is_required = required.contains(&name.as_str());
        let mut ty = nix_type(root, property, indent + 4);
        let default = property
            .get("default")
            .or_else(|| resolve(root, property).get("default"));
        let default = match (is_required, default) {
            (true, _) => None,
            (false, Some(value)) if with_defaults => Some(nix_value(value)),
            (false, _) => {
                if !ty.starts_with("types.nullOr") {
                    ty = format!("types.nullOr ({ty})");
                }
                Some("null".to_string())
            }
        };
        let _ = writeln!(out, "{pad}  {} = mkOption {{", nix_attr_name(name));
        let _ = writeln!(out, "{pad}    type = {ty};");
        if let Some(default) = default {
            let _ = writeln!(out, "{pad}    default = {default};");
        }
        if let Some(description) = description_of(root, property) {
            let _ = writeln!(
                out,
                "{pad}    description = {};",
                nix_long_string(&description, indent + 4)
            );
        }
        let _ = writeln!(out, "{pad}  }};");
    }
    let _ = write!(out, "{pad}}}");
    out
}

fn required_set(object: &Value) -> Vec<&str> {
    object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn description_of(root: &Value, property: &Value) -> Option<String> {
    property
        .get("description")
        .or_else(|| resolve(root, property).get("description"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The Nix option type for a JSON Schema; `indent` is that of the line the
/// type starts on.
fn nix_type(root: &Value, schema: &Value, indent: usize) -> String {
    if let Some(inner) = nullable_inner(schema) {
        return format!("types.nullOr ({})", nix_type(root, inner, indent));
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str)
        && let Some(target) = reference.strip_prefix('#').and_then(|p| root.pointer(p))
    {
        return nix_type(root, target, indent);
    }
    if let Some(values) = enum_values(schema) {
        let listed: Vec<String> = values.iter().map(nix_value).collect();
        return format!("types.enum [ {} ]", listed.join(" "));
    }
    if let Some(alternatives) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        let types: Vec<String> = alternatives
            .iter()
            .map(|s| nix_type(root, s, indent))
            .collect();
        if types.iter().any(|t| t.contains("types.submodule")) {
            return "types.anything".to_string();
        }
        return format!(
            "types.oneOf [ {} ]",
            types
                .iter()
                .map(|t| format!("({t})"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let ty = match schema.get("type") {
        Some(Value::String(ty)) => ty.as_str(),
        Some(Value::Array(types)) => {
            let non_null: Vec<&Value> = types
                .iter()
                .filter(|t| t.as_str() != Some("null"))
                .collect();
            if non_null.len() == 1 && non_null.len() < types.len() {
                let mut inner = schema.clone();
                inner["type"] = non_null[0].clone();
                return format!("types.nullOr ({})", nix_type(root, &inner, indent));
            }
            return "types.anything".to_string();
        }
        _ => return "types.anything".to_string(),
    };
    match ty {
        "string" => "types.str".to_string(),
        "boolean" => "types.bool".to_string(),
        "number" => "types.number".to_string(),
        "integer" => match schema.get("minimum").and_then(Value::as_f64) {
            Some(min) if min >= 0.0 => "types.ints.unsigned".to_string(),
            _ => "types.int".to_string(),
        },
        "array" => match schema.get("items") {
            Some(items) => format!("types.listOf ({})", nix_type(root, items, indent)),
            None => "types.listOf types.anything".to_string(),
        },
        "object" => {
            if schema.get("properties").is_some() {
                format!(
                    "types.submodule {{\n{}options = {};\n{}}}",
                    " ".repeat(indent + 2),
                    nix_options(root, schema, indent + 2, true),
                    " ".repeat(indent)
                )
            } else {
                match schema.get("additionalProperties") {
                    Some(additional) if additional.is_object() => {
                        format!("types.attrsOf ({})", nix_type(root, additional, indent))
                    }
                    _ => "types.attrsOf types.anything".to_string(),
                }
            }
        }
        _ => "types.anything".to_string(),
    }
}

/// A JSON value as a Nix expression.
fn nix_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => nix_string(s),
        Value::Array(items) if items.is_empty() => "[ ]".to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(nix_value).collect();
            format!("[ {} ]", items.join(" "))
        }
        Value::Object(map) if map.is_empty() => "{ }".to_string(),
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {};", nix_attr_name(k), nix_value(v)))
                .collect();
            format!("{{ {} }}", fields.join(" "))
        }
    }
}

/// A double-quoted Nix string.
fn nix_string(text: &str) -> String {
    format!("\"{}\"", nix_string_body(text))
}

fn nix_string_body(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${")
        .replace('\n', "\\n")
}

/// An indented `''...''` Nix string holding `text`, for descriptions.
fn nix_long_string(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let escaped = text.replace("''", "'''").replace("${", "''${");
    let mut out = String::from("''\n");
    for line in escaped.trim().lines() {
        if line.trim().is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{pad}{line}");
        }
    }
    out.push_str(&" ".repeat(indent));
    out.push_str("''");
    out
}

/// An attribute name, quoted when it is not a plain identifier.
fn nix_attr_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''));
    if plain {
        name.to_string()
    } else {
        nix_string(name)
    }
}

/// The Markdown reference page for `schema`.
pub fn markdown(schema: &ProviderSchema) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Generated from `{exe} --schema` by `fedi-resource-runner generate`. Do not edit. -->\n\n\
         # Provider `{name}`\n\n{description}\n\n\
         Executable: `{exe}` (version {version}). Nix module: `nix/providers/{name}.nix`.\n",
        exe = schema.executable,
        name = schema.name,
        description = schema.description,
        version = schema.version,
    );
    for (name, resource) in &schema.resource_types {
        let _ = writeln!(
            out,
            "## Resource type `{name}`\n\n{}\n",
            resource.description
        );
        let _ = writeln!(
            out,
            "- Requires state: {}\n- Delete (`xDeleteResourceRequest`): {}\n- Read (`xReadResourceRequest`): {}\n- State storage: {}\n",
            yes_no(resource.require_state),
            yes_no(resource.operations.delete),
            yes_no(resource.operations.read),
            yes_no(resource.operations.state_storage),
        );
        for (title, schema) in [("Inputs", &resource.inputs), ("Outputs", &resource.outputs)] {
            let _ = writeln!(out, "### {title}\n");
            let mut rows = Vec::new();
            property_rows(schema, schema, "", &mut rows);
            if rows.is_empty() {
                let _ = writeln!(out, "None.\n");
                continue;
            }
            let _ = writeln!(out, "| name | type | required | default | description |");
            let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
            for row in rows {
                let _ = writeln!(out, "{row}");
            }
            out.push('\n');
        }
    }
    out
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Table rows for an object's properties, nested ones as `parent.child` and
/// list elements as `parent[].child`.
fn property_rows(root: &Value, object: &Value, prefix: &str, rows: &mut Vec<String>) {
    let object = resolve(root, object);
    let Some(properties) = object.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required = required_set(object);
    for (name, property) in properties {
        let full = format!("{prefix}{name}");
        let default = property
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let description = description_of(root, property)
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        rows.push(format!(
            "| `{full}` | {} | {} | {default} | {description} |",
            describe_type(root, property),
            yes_no(required.contains(&name.as_str())),
        ));
        let inner = resolve(root, property);
        if inner.get("properties").is_some() {
            property_rows(root, inner, &format!("{full}."), rows);
        } else if let Some(items) = inner.get("items")
            && resolve(root, items).get("properties").is_some()
        {
            property_rows(root, items, &format!("{full}[]."), rows);
        }
    }
}
