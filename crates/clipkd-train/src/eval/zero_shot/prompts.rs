//! The prompts of zero-shot classification: class names (open_clip's ImageNet list, a file, or
//! the dataset's folders) and templates (OpenAI's 80, or a file), parsed as open_clip reads them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use clipkd_data::DataError;
use clipkd_data::dataset::ImageFolder;

/// open_clip 3.3.0's `IMAGENET_CLASSNAMES` (MIT; `assets/imagenet_classnames.txt`), one per
/// line in label order (sorted WordNet ids).
pub const IMAGENET_CLASSNAMES_TXT: &str = include_str!("../../../assets/imagenet_classnames.txt");

/// open_clip 3.3.0's `OPENAI_IMAGENET_TEMPLATES` (MIT; `assets/openai_imagenet_templates.txt`),
/// one per line, `{}` where the class name goes.
pub const OPENAI_IMAGENET_TEMPLATES_TXT: &str =
    include_str!("../../../assets/openai_imagenet_templates.txt");

/// The 1000 ImageNet class names of open_clip, in label order. (As there, two names occur
/// twice: `missile` and `sunglasses`.)
pub fn imagenet_classnames() -> Vec<String> {
    IMAGENET_CLASSNAMES_TXT.lines().map(str::to_owned).collect()
}

/// The 80 templates of OpenAI's ImageNet zero-shot evaluation.
pub fn openai_imagenet_templates() -> Vec<Template> {
    OPENAI_IMAGENET_TEMPLATES_TXT
        .lines()
        .map(|t| Template::parse(t).expect("the bundled templates are valid"))
        .collect()
}

/// Where the class names of a zero-shot evaluation come from.
///
/// Serde form: `"imagenet"`, `"folders"`, or `{"file": "classnames.txt"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassNames {
    /// The 1000 bundled ImageNet names ([`imagenet_classnames`]); the folder must have exactly
    /// 1000 class folders (the WordNet-id folders of ImageNet, whose sorted order is the label
    /// order).
    #[default]
    Imagenet,
    /// The class folders' own names.
    Folders,
    /// A UTF-8 text file: either one name per line, in the sorted order of the class folders
    /// (as many names as folders), or one `folder<TAB>name` per line for every class folder
    /// (extra folders in the file are ignored). Blank lines are skipped and names trimmed.
    File(PathBuf),
}

impl ClassNames {
    /// The class names of `folder`'s classes, in label order. Errors name the file and line.
    pub fn resolve(&self, folder: &ImageFolder) -> Result<Vec<String>, DataError> {
        let classes = folder.classes();
        let bad = |what: String| DataError::ImageFolder {
            path: folder.root().to_path_buf(),
            what,
        };
        match self {
            ClassNames::Folders => Ok(classes.to_vec()),
            ClassNames::Imagenet => {
                let names = imagenet_classnames();
                if names.len() != classes.len() {
                    return Err(bad(format!(
                        "{} class folders, but the bundled ImageNet class names are for 1000 \
                         (give a class-name file, or use the folder names)",
                        classes.len()
                    )));
                }
                Ok(names)
            }
            ClassNames::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?;
                parse_classnames(&text, classes)
                    .map_err(|what| bad(format!("class names {}: {what}", path.display())))
            }
        }
    }

    /// A short description for reports (`imagenet`, `folders`, the file path).
    pub fn describe(&self) -> String {
        match self {
            ClassNames::Imagenet => "imagenet".into(),
            ClassNames::Folders => "folders".into(),
            ClassNames::File(p) => p.display().to_string(),
        }
    }
}

/// Parses a class-name file's text against the sorted class folders (see
/// [`ClassNames::File`]). The error says what and on which line.
pub fn parse_classnames(text: &str, folders: &[String]) -> Result<Vec<String>, String> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mapping = lines.iter().any(|(_, l)| l.contains('\t'));
    if !mapping {
        if lines.len() != folders.len() {
            return Err(format!(
                "{} names for {} class folders (one name per line, in the sorted order of the \
                 folders, or `folder<TAB>name` lines)",
                lines.len(),
                folders.len()
            ));
        }
        return Ok(lines.iter().map(|(_, l)| l.trim().to_string()).collect());
    }
    let mut map = std::collections::HashMap::new();
    for (n, line) in &lines {
        let (folder, name) = line.split_once('\t').ok_or_else(|| {
            format!("line {n}: no tab (the file maps folders to names: `folder<TAB>name`)")
        })?;
        let (folder, name) = (folder.trim(), name.trim());
        if folder.is_empty() || name.is_empty() {
            return Err(format!("line {n}: empty folder or name in `{line}`"));
        }
        if map.insert(folder, name).is_some() {
            return Err(format!("line {n}: folder `{folder}` is mapped twice"));
        }
    }
    let missing: Vec<&str> = folders
        .iter()
        .filter(|f| !map.contains_key(f.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(5)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "no name for {} class folder(s): {shown}{}",
            missing.len(),
            if missing.len() > 5 { ", ..." } else { "" }
        ));
    }
    Ok(folders
        .iter()
        .map(|f| map[f.as_str()].to_string())
        .collect())
}

/// A prompt template in Python `str.format` syntax with the class name as its only argument:
/// `{}` or `{0}` where the name goes, `{{` and `}}` for literal braces. As in Python, `{}` may
/// appear once (`{0}` any number of times) and the two may not be mixed; unlike Python, a
/// template must use the name at least once (one that does not gives every class the same
/// text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The text between placeholders (one more piece than placeholders).
    pieces: Vec<String>,
    source: String,
}

impl Template {
    /// Parses a template; the error says what is wrong.
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut pieces = vec![String::new()];
        let (mut auto, mut manual) = (0usize, 0usize);
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    pieces.last_mut().expect("never empty").push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    pieces.last_mut().expect("never empty").push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => field.push(ch),
                            None => return Err(format!("`{template}`: unclosed `{{`")),
                        }
                    }
                    match field.as_str() {
                        "" => auto += 1,
                        "0" => manual += 1,
                        other => {
                            return Err(format!(
                                "`{template}`: unsupported field `{{{other}}}` (use `{{}}` for \
                                 the class name, `{{{{` and `}}}}` for braces)"
                            ));
                        }
                    }
                    pieces.push(String::new());
                }
                '}' => {
                    return Err(format!(
                        "`{template}`: single `}}` (write `}}}}` for a brace)"
                    ));
                }
                c => pieces.last_mut().expect("never empty").push(c),
            }
        }
        if auto > 1 {
            return Err(format!(
                "`{template}`: {auto} `{{}}` fields but one class name (use `{{0}}` to repeat it)"
            ));
        }
        if auto > 0 && manual > 0 {
            return Err(format!("`{template}`: mixes `{{}}` and `{{0}}` fields"));
        }
        if auto + manual == 0 {
            return Err(format!("`{template}`: no `{{}}` where the class name goes"));
        }
        Ok(Template {
            pieces,
            source: template.to_string(),
        })
    }

    /// The prompt for a class name (`template.format(name)`).
    pub fn format(&self, class_name: &str) -> String {
        self.pieces.join(class_name)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Where the templates of a zero-shot evaluation come from.
///
/// Serde form: `"openai_imagenet"`, `{"file": "templates.txt"}` or `{"list": ["a photo of a {}."]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Templates {
    /// The 80 OpenAI ImageNet templates ([`openai_imagenet_templates`]).
    #[default]
    OpenaiImagenet,
    /// A UTF-8 text file, one [`Template`] per line (blank lines skipped).
    File(PathBuf),
    /// Templates given inline.
    List(Vec<String>),
}

impl Templates {
    /// The parsed templates. Errors name the file and line (or list entry).
    pub fn resolve(&self) -> Result<Vec<Template>, DataError> {
        let bad = |what: String| DataError::DatasetSpec {
            what: format!("zero-shot templates {what}"),
        };
        let (origin, entries): (String, Vec<(String, &str)>) = match self {
            Templates::OpenaiImagenet => return Ok(openai_imagenet_templates()),
            Templates::List(list) => (
                "list".into(),
                list.iter()
                    .enumerate()
                    .map(|(i, t)| (format!("entry {i}"), t.as_str()))
                    .collect(),
            ),
            Templates::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?;
                let entries = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| (format!("line {}", i + 1), l.to_owned()))
                    .collect::<Vec<_>>();
                return parse_templates(&path.display().to_string(), &entries, bad);
            }
        };
        let owned: Vec<(String, String)> = entries
            .into_iter()
            .map(|(w, t)| (w, t.to_owned()))
            .collect();
        parse_templates(&origin, &owned, bad)
    }

    /// A short description for reports (`openai_imagenet`, the file path, `list`).
    pub fn describe(&self) -> String {
        match self {
            Templates::OpenaiImagenet => "openai_imagenet".into(),
            Templates::File(p) => p.display().to_string(),
            Templates::List(_) => "list".into(),
        }
    }
}

/// Parses `(where, template)` entries from `origin`; an empty list is an error.
fn parse_templates(
    origin: &str,
    entries: &[(String, String)],
    bad: impl Fn(String) -> DataError,
) -> Result<Vec<Template>, DataError> {
    if entries.is_empty() {
        return Err(bad(format!("{origin}: no template")));
    }
    entries
        .iter()
        .map(|(at, t)| Template::parse(t).map_err(|e| bad(format!("{origin}, {at}: {e}"))))
        .collect()
}
