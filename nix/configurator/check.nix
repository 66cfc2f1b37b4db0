# Field-by-field validation of plain attribute sets (a parsed JSON file or a
# Nix file), without nixpkgs: unknown fields, missing fields and wrong types
# fail with a message that names the field and the fix.
#
# A spec is an attribute set:
#   type        "string" | "bool" | "int" | "set" | "list" | "enum"
#   values      the allowed strings (type "enum")
#   elements    the spec of each element (type "list"; optional)
#   fields      the specs of the fields (type "set"; optional: any set)
#   nullable    null is allowed too (default false)
#   optional    the field may be absent (default false); then `default`,
#               when given, takes its place, else the field stays absent
#   description what the field is, for the messages
#   check       value -> null (fine) or a string (what is wrong)
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    genList
    head
    isString
    length
    listToAttrs
    map
    toJSON
    typeOf
    ;

  typeTexts = {
    string = "a string";
    bool = "true or false";
    int = "an integer";
    set = "an object";
    list = "a list";
  };

  showPath = path: if path == [ ] then "(top level)" else concatStringsSep "." path;

  typeText =
    spec:
    (
      if spec.type == "enum" then
        "one of " + concatStringsSep ", " (map (v: ''"${v}"'') spec.values)
      else
        typeTexts.${spec.type}
    )
    + (if spec.nullable or false then " or null" else "");

  typeOk =
    spec: v:
    (spec.nullable or false && v == null)
    || (if spec.type == "enum" then isString v && elem v spec.values else typeOf v == spec.type);

  described = spec: if spec ? description then " (${spec.description})" else "";

  validate =
    ctx: path: spec: value:
    if !(typeOk spec value) then
      throw "${ctx.source}: field \"${showPath path}\" must be ${typeText spec}${described spec}, not ${toJSON value}. Fix: correct it in ${ctx.file}."
    else if value == null then
      null
    else if spec.type == "set" && spec ? fields then
      checked ctx path spec (validateFields ctx path spec.fields value)
    else if spec.type == "list" && spec ? elements then
      checked ctx path spec (
        genList (
          i: validate ctx (path ++ [ "${toString i}" ]) spec.elements (builtins.elemAt value i)
        ) (length value)
      )
    else
      checked ctx path spec value;

  checked =
    ctx: path: spec: value:
    let
      problem = if spec ? check then spec.check value else null;
    in
    if problem == null then
      value
    else
      throw "${ctx.source}: field \"${showPath path}\" ${problem}. Fix: correct it in ${ctx.file}.";

  validateFields =
    ctx: path: fields: value:
    let
      unknown = filter (n: !(fields ? ${n})) (attrNames value);
      missing = filter (n: !(fields.${n}.optional or false) && !(value ? ${n})) (attrNames fields);
      present = filter (n: value ? ${n} || fields.${n} ? default) (attrNames fields);
    in
    if unknown != [ ] then
      throw "${ctx.source}: unknown field \"${showPath (path ++ [ (head unknown) ])}\"; the fields known there are ${concatStringsSep ", " (attrNames fields)}. Fix: remove it or correct its spelling in ${ctx.file}."
    else if missing != [ ] then
      let
        n = head missing;
      in
      throw "${ctx.source}: missing field \"${showPath (path ++ [ n ])}\", ${typeText fields.${n}}${described fields.${n}}. Fix: add it to ${ctx.file}."
    else
      listToAttrs (
        map (n: {
          name = n;
          value =
            if value ? ${n} then validate ctx (path ++ [ n ]) fields.${n} value.${n} else fields.${n}.default;
        }) present
      );
in
{
  inherit validate showPath typeText;

  # A secret reference, `{ file = "/path"; }` or `{ env = "NAME"; }`: never a
  # literal secret, which would land in the world-readable Nix store.
  secretRef = description: {
    type = "set";
    inherit description;
    fields = {
      file = {
        type = "string";
        optional = true;
        description = "path of a file holding the secret";
      };
      env = {
        type = "string";
        optional = true;
        description = "name of an environment variable holding the secret";
      };
    };
    check =
      v:
      if (v ? file) == (v ? env) then
        "must name exactly one of `file` and `env` (a secret is never given literally)"
      else
        null;
  };
}
