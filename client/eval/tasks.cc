#include "client/eval/tasks.h"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/eval/metrics.h"
#include "client/eval/text.h"
#include "nlohmann/json.hpp"
#include "server/common/json_nesting.h"

namespace kvwire::eval {
namespace {

using json = nlohmann::json;

// Field helpers return plain messages; callers prefix them with the location.

std::string TypeName(const json& v) { return v.type_name(); }

const json* Find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

absl::Status GetString(const json& obj, const char* key, bool required, std::string* out) {
  const json* v = Find(obj, key);
  if (v == nullptr || v->is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("missing \"", key, "\""));
    return absl::OkStatus();
  }
  if (!v->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\" must be a string, got ", TypeName(*v)));
  }
  *out = v->get_ref<const std::string&>();
  return absl::OkStatus();
}

// Strings verbatim; integers as decimal text (some converted datasets store counts as numbers).
absl::Status ScalarText(const json& v, const char* key, std::string* out) {
  if (v.is_string()) {
    *out = v.get_ref<const std::string&>();
  } else if (v.is_number_integer()) {
    *out = v.dump();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\" entries must be strings, got ", TypeName(v)));
  }
  return absl::OkStatus();
}

// A list of strings. `single_ok` also accepts a bare string; null counts as absent.
absl::Status GetStringList(const json& obj, const char* key, bool required, bool single_ok,
                           std::vector<std::string>* out) {
  out->clear();
  const json* v = Find(obj, key);
  if (v == nullptr || v->is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("missing \"", key, "\""));
    return absl::OkStatus();
  }
  if (single_ok && v->is_string()) {
    out->push_back(v->get_ref<const std::string&>());
    return absl::OkStatus();
  }
  if (!v->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\" must be a list, got ", TypeName(*v)));
  }
  for (const json& e : *v) {
    std::string s;
    if (absl::Status st = ScalarText(e, key, &s); !st.ok()) return st;
    out->push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::Status GetInt(const json& obj, const char* key, int64_t* out) {
  const json* v = Find(obj, key);
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" out of range"));
    }
    *out = static_cast<int64_t>(u);
    return absl::OkStatus();
  }
  if (v->is_number_integer()) {
    *out = v->get<int64_t>();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", key, "\" must be an integer, got ", TypeName(*v)));
}

// Ids are strings in LongBench/SQuAD and integers in RULER; keep both as text.
absl::Status GetId(const json& obj, const char* key, std::string* out) {
  const json* v = Find(obj, key);
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  if (v->is_string() || v->is_number_integer()) return ScalarText(*v, key, out);
  return absl::InvalidArgumentError(
      absl::StrCat("\"", key, "\" must be a string or integer, got ", TypeName(*v)));
}

void CollectExtra(const json& obj, std::initializer_list<std::string_view> known,
                  std::map<std::string, std::string>* extra) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool is_known = false;
    for (std::string_view k : known) is_known = is_known || it.key() == k;
    if (is_known) continue;
    // error_handler_t::replace: dump() must not throw; input was UTF-8-checked anyway.
    (*extra)[it.key()] = it->is_string()
                             ? it->get_ref<const std::string&>()
                             : it->dump(-1, ' ', false, json::error_handler_t::replace);
  }
}

#define EVAL_RETURN_IF_ERROR(expr)                      \
  do {                                                  \
    if (absl::Status st_ = (expr); !st_.ok()) return st_; \
  } while (0)

absl::Status FromKvwire(const json& o, TaskExample* ex) {
  EVAL_RETURN_IF_ERROR(GetString(o, "context", true, &ex->context));
  EVAL_RETURN_IF_ERROR(GetString(o, "question", true, &ex->question));
  EVAL_RETURN_IF_ERROR(GetStringList(o, "answers", true, true, &ex->answers));
  EVAL_RETURN_IF_ERROR(GetId(o, "id", &ex->id));
  EVAL_RETURN_IF_ERROR(GetString(o, "task", false, &ex->task));
  EVAL_RETURN_IF_ERROR(GetStringList(o, "all_classes", false, false, &ex->all_classes));
  EVAL_RETURN_IF_ERROR(GetString(o, "language", false, &ex->language));
  EVAL_RETURN_IF_ERROR(GetInt(o, "length", &ex->length));
  CollectExtra(o, {"context", "question", "answers", "id", "task", "all_classes", "language",
                   "length"},
               &ex->extra);
  return absl::OkStatus();
}

absl::Status FromLongBench(const json& o, TaskExample* ex) {
  EVAL_RETURN_IF_ERROR(GetString(o, "input", true, &ex->question));
  EVAL_RETURN_IF_ERROR(GetString(o, "context", true, &ex->context));
  EVAL_RETURN_IF_ERROR(GetStringList(o, "answers", true, false, &ex->answers));
  EVAL_RETURN_IF_ERROR(GetInt(o, "length", &ex->length));
  EVAL_RETURN_IF_ERROR(GetString(o, "dataset", false, &ex->task));
  EVAL_RETURN_IF_ERROR(GetString(o, "language", false, &ex->language));
  EVAL_RETURN_IF_ERROR(GetStringList(o, "all_classes", false, false, &ex->all_classes));
  EVAL_RETURN_IF_ERROR(GetId(o, "_id", &ex->id));
  CollectExtra(o, {"input", "context", "answers", "length", "dataset", "language", "all_classes",
                   "_id"},
               &ex->extra);
  return absl::OkStatus();
}

absl::Status FromRuler(const json& o, TaskExample* ex) {
  EVAL_RETURN_IF_ERROR(GetString(o, "input", true, &ex->context));
  EVAL_RETURN_IF_ERROR(GetStringList(o, "outputs", true, false, &ex->answers));
  EVAL_RETURN_IF_ERROR(GetId(o, "index", &ex->id));
  EVAL_RETURN_IF_ERROR(GetInt(o, "length", &ex->length));
  CollectExtra(o, {"input", "outputs", "index", "length"}, &ex->extra);
  return absl::OkStatus();
}

#undef EVAL_RETURN_IF_ERROR

int64_t LineOfOffset(std::string_view s, size_t offset) {
  offset = std::min(offset, s.size());
  return 1 + std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(offset), '\n');
}

absl::StatusOr<std::vector<TaskExample>> LoadSquad(std::istream& in, const LoadOptions& opt) {
  std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat(opt.source_name, ": read failed"));
  if (const size_t bad = text::FindInvalidUtf8(doc); bad != std::string_view::npos) {
    const size_t nl = bad == 0 ? std::string::npos : doc.rfind('\n', bad - 1);
    const size_t col = bad - (nl == std::string::npos ? 0 : nl + 1) + 1;
    return absl::InvalidArgumentError(absl::StrCat(opt.source_name, ":", LineOfOffset(doc, bad),
                                                   ": invalid UTF-8 at byte column ", col));
  }
  if (absl::Status deep = common::CheckJsonNesting(doc, opt.source_name); !deep.ok()) return deep;
  json root;
  try {
    root = json::parse(doc);
  } catch (const json::parse_error& e) {
    // e.byte is 1-based and points at the offending character.
    return absl::InvalidArgumentError(
        absl::StrCat(opt.source_name, ":", LineOfOffset(doc, e.byte == 0 ? 0 : e.byte - 1),
                     ": invalid JSON: ", e.what()));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(opt.source_name, ": invalid JSON: ", e.what()));
  }
  auto err = [&](const std::string& where, absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat(opt.source_name, ": ", where, ": ", msg));
  };
  if (!root.is_object()) return err("top level", "must be an object");
  const json* data = Find(root, "data");
  if (data == nullptr || !data->is_array()) return err("top level", "missing \"data\" list");
  std::string version;
  if (const json* v = Find(root, "version"); v != nullptr && v->is_string()) {
    version = v->get<std::string>();
  }

  // Fields shared by every question. Assigned from std::string temporaries: GCC 12 reports a
  // false -Wmaybe-uninitialized for assigning these short literals directly.
  TaskExample proto;
  proto.task = std::string("squad");
  proto.language = std::string("en");
  if (!version.empty()) proto.extra["version"] = version;

  std::vector<TaskExample> out;
  for (size_t a = 0; a < data->size(); ++a) {
    const json& article = (*data)[a];
    const std::string at_a = absl::StrCat("data[", a, "]");
    if (!article.is_object()) return err(at_a, "must be an object");
    std::string title;
    if (absl::Status st = GetString(article, "title", false, &title); !st.ok()) {
      return err(at_a, st.message());
    }
    if (title.empty()) {
      proto.extra.erase("title");
    } else {
      proto.extra["title"] = title;
    }
    const json* paragraphs = Find(article, "paragraphs");
    if (paragraphs == nullptr || !paragraphs->is_array()) {
      return err(at_a, "missing \"paragraphs\" list");
    }
    for (size_t p = 0; p < paragraphs->size(); ++p) {
      const json& para = (*paragraphs)[p];
      const std::string at_p = absl::StrCat(at_a, ".paragraphs[", p, "]");
      if (!para.is_object()) return err(at_p, "must be an object");
      std::string context;
      if (absl::Status st = GetString(para, "context", true, &context); !st.ok()) {
        return err(at_p, st.message());
      }
      const json* qas = Find(para, "qas");
      if (qas == nullptr || !qas->is_array()) return err(at_p, "missing \"qas\" list");
      for (size_t q = 0; q < qas->size(); ++q) {
        const json& qa = (*qas)[q];
        const std::string at_q = absl::StrCat(at_p, ".qas[", q, "]");
        if (!qa.is_object()) return err(at_q, "must be an object");
        TaskExample ex = proto;
        ex.context = context;
        absl::Status st = GetId(qa, "id", &ex.id);
        if (st.ok()) st = GetString(qa, "question", true, &ex.question);
        if (!st.ok()) return err(at_q, st.message());
        bool impossible = false;
        if (const json* imp = Find(qa, "is_impossible"); imp != nullptr && !imp->is_null()) {
          if (!imp->is_boolean()) return err(at_q, "\"is_impossible\" must be a boolean");
          impossible = imp->get<bool>();
        }
        if (const json* answers = Find(qa, "answers"); answers != nullptr && !impossible) {
          if (!answers->is_array()) return err(at_q, "\"answers\" must be a list");
          for (size_t k = 0; k < answers->size(); ++k) {
            const json& ans = (*answers)[k];
            std::string t;
            st = ans.is_object() ? GetString(ans, "text", true, &t)
                                 : absl::InvalidArgumentError("must be an object");
            if (!st.ok()) return err(absl::StrCat(at_q, ".answers[", k, "]"), st.message());
            // Official v2 scoring ignores golds that normalise to nothing.
            if (!NormalizeAnswer(t).empty()) ex.answers.push_back(std::move(t));
          }
        }
        if (ex.answers.empty()) ex.answers.push_back("");
        out.push_back(std::move(ex));
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<TaskExample>> LoadLines(std::istream& in, TaskFormat format,
                                                   const LoadOptions& opt) {
  std::vector<TaskExample> out;
  std::string line;
  int64_t lineno = 0;
  auto line_error = [&](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat(opt.source_name, ":", lineno, ": ", msg));
  };
  while (std::getline(in, line)) {
    ++lineno;
    std::string_view view(line);
    if (lineno == 1 && view.substr(0, 3) == "\xEF\xBB\xBF") view.remove_prefix(3);
    if (!view.empty() && view.back() == '\r') view.remove_suffix(1);
    if (view.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos) continue;
    if (const size_t bad = text::FindInvalidUtf8(view); bad != std::string_view::npos) {
      return line_error(absl::StrCat("invalid UTF-8 at byte column ", bad + 1));
    }
    if (absl::Status deep = common::CheckJsonNesting(view, "the line"); !deep.ok()) {
      return line_error(deep.message());
    }
    json obj;
    try {
      obj = json::parse(view);
    } catch (const json::exception& e) {
      return line_error(absl::StrCat("invalid JSON: ", e.what()));
    }
    if (!obj.is_object()) return line_error(absl::StrCat("expected an object, got ", TypeName(obj)));
    TaskExample ex;
    absl::Status st;
    switch (format) {
      case TaskFormat::kKvwire:
        st = FromKvwire(obj, &ex);
        break;
      case TaskFormat::kLongBench:
        st = FromLongBench(obj, &ex);
        break;
      case TaskFormat::kRuler:
        st = FromRuler(obj, &ex);
        break;
      case TaskFormat::kSquad:
        st = absl::InternalError("not a line format");
        break;
    }
    if (!st.ok()) return line_error(st.message());
    if (ex.task.empty()) ex.task = opt.default_task;
    out.push_back(std::move(ex));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(opt.source_name, ": read failed"));
  return out;
}

}  // namespace

absl::StatusOr<TaskFormat> ParseTaskFormat(std::string_view name) {
  if (name == "kvwire") return TaskFormat::kKvwire;
  if (name == "longbench") return TaskFormat::kLongBench;
  if (name == "squad") return TaskFormat::kSquad;
  if (name == "ruler") return TaskFormat::kRuler;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown task format \"", absl::string_view(name.data(), name.size()),
      "\" (expected kvwire, longbench, squad or ruler)"));
}

absl::StatusOr<std::vector<TaskExample>> LoadJsonl(std::istream& in, TaskFormat format,
                                                   const LoadOptions& options) {
  auto examples = format == TaskFormat::kSquad ? LoadSquad(in, options) : LoadLines(in, format, options);
  if (!examples.ok()) return examples;
  // Results are keyed by example id (resume skips ids already in the log), so two examples
  // with one id would silently become one. Unnamed examples get their index.
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < examples->size(); ++i) {
    TaskExample& ex = (*examples)[i];
    if (ex.id.empty()) ex.id = std::to_string(i);
    auto [it, fresh] = seen.emplace(ex.id, i);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(options.source_name, ": examples ", it->second + 1,
                                                     " and ", i + 1, " have the same id \"", ex.id,
                                                     "\"; ids must be unique"));
    }
  }
  return examples;
}

absl::StatusOr<std::vector<TaskExample>> LoadJsonlFile(const std::string& path, TaskFormat format,
                                                       LoadOptions options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open task file ", path));
  if (options.source_name == LoadOptions{}.source_name) options.source_name = path;
  return LoadJsonl(in, format, options);
}

}  // namespace kvwire::eval
