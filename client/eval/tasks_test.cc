#include "client/eval/tasks.h"

#include <cstdlib>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string TestData(const std::string& name) {
  return std::string(KVWIRE_EVAL_TESTDATA) + "/" + name;
}

TEST(ParseTaskFormatTest, KnownNames) {
  EXPECT_EQ(*ParseTaskFormat("kvwire"), TaskFormat::kKvwire);
  EXPECT_EQ(*ParseTaskFormat("longbench"), TaskFormat::kLongBench);
  EXPECT_EQ(*ParseTaskFormat("squad"), TaskFormat::kSquad);
  EXPECT_EQ(*ParseTaskFormat("ruler"), TaskFormat::kRuler);
  EXPECT_EQ(ParseTaskFormat("csv").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoadKvwireTest, ReadsFixture) {
  auto r = LoadJsonlFile(TestData("kvwire.jsonl"), TaskFormat::kKvwire, {.default_task = "dflt"});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);  // the blank line is skipped
  const TaskExample& a = (*r)[0];
  EXPECT_EQ(a.id, "k1");
  EXPECT_EQ(a.task, "hotpotqa");
  EXPECT_EQ(a.context, "Paris is the capital of France.");
  EXPECT_EQ(a.question, "Which country is Paris in?");
  EXPECT_THAT(a.answers, ElementsAre("France", "the French Republic"));
  EXPECT_EQ(a.extra.at("source"), "unit");
  EXPECT_EQ(a.extra.at("meta"), R"({"split":"dev"})");
  const TaskExample& b = (*r)[1];
  EXPECT_EQ(b.id, "1");  // no id: position in the file
  EXPECT_THAT(b.answers, ElementsAre("single answer"));
  EXPECT_EQ(b.length, 3);
  const TaskExample& c = (*r)[2];
  EXPECT_EQ(c.id, "7");
  EXPECT_THAT(c.all_classes, ElementsAre("Location", "Date"));
  EXPECT_EQ(c.language, "en");
}

TEST(LoadLongBenchTest, ReadsFixture) {
  auto r = LoadJsonlFile(TestData("longbench.jsonl"), TaskFormat::kLongBench);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  const TaskExample& a = (*r)[0];
  EXPECT_EQ(a.id, "a1b2c3");
  EXPECT_EQ(a.task, "hotpotqa");
  EXPECT_EQ(a.question, "Which city hosted the 1900 Olympics?");
  EXPECT_EQ(a.context, "Passage 1:\nParis hosted the Games in 1900.");
  EXPECT_THAT(a.answers, ElementsAre("Paris"));
  EXPECT_THAT(a.all_classes, IsEmpty());  // null
  EXPECT_EQ(a.length, 9);
  EXPECT_EQ(a.language, "en");
  const TaskExample& b = (*r)[1];
  EXPECT_EQ(b.task, "trec");
  EXPECT_EQ(b.question, "What is the capital of Zürich canton?");
  EXPECT_THAT(b.all_classes, ElementsAre("Abbreviation", "Location", "Date"));
  EXPECT_EQ(b.extra.at("pred"), "Location");
}

TEST(LoadSquadTest, ReadsV2Fixture) {
  auto r = LoadJsonlFile(TestData("squad_v2.json"), TaskFormat::kSquad);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].id, "q1");
  EXPECT_EQ((*r)[0].task, "squad");
  EXPECT_EQ((*r)[0].context, "Cats sleep a lot.");
  EXPECT_EQ((*r)[0].question, "What do cats do?");
  EXPECT_THAT((*r)[0].answers, ElementsAre("sleep a lot", "sleep"));
  EXPECT_EQ((*r)[0].extra.at("title"), "Cats");
  EXPECT_EQ((*r)[0].extra.at("version"), "v2.0");
  EXPECT_THAT((*r)[1].answers, ElementsAre(""));  // is_impossible
  EXPECT_THAT((*r)[2].answers, ElementsAre(""));  // only gold normalises to nothing
  EXPECT_EQ((*r)[3].context, "Dogs bark.");        // v1.1-style entry without is_impossible
  EXPECT_THAT((*r)[3].answers, ElementsAre("bark"));
  EXPECT_EQ((*r)[3].extra.at("title"), "Dogs");
}

TEST(LoadSquadTest, SyntaxErrorNamesLine) {
  auto r = LoadJsonlFile(TestData("squad_bad.json"), TaskFormat::kSquad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("squad_bad.json:4: invalid JSON"));
}

TEST(LoadSquadTest, StructureErrorsNamePath) {
  std::istringstream in(R"({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]})");
  auto r = LoadJsonl(in, TaskFormat::kSquad);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("data[0].paragraphs[0].qas[0]: missing \"question\""));
}

TEST(LoadRulerTest, ReadsFixture) {
  auto r = LoadJsonlFile(TestData("ruler.jsonl"), TaskFormat::kRuler,
                         {.default_task = "niah_single_1"});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].id, "0");
  EXPECT_EQ((*r)[0].task, "niah_single_1");
  EXPECT_THAT((*r)[0].context, HasSubstr("special magic numbers for apple is: 12345"));
  EXPECT_EQ((*r)[0].question, "");
  EXPECT_THAT((*r)[0].answers, ElementsAre("12345"));
  EXPECT_EQ((*r)[0].length, 4096);
  EXPECT_EQ((*r)[0].extra.at("answer_prefix"), " Answer: The special magic number for apple is");
  EXPECT_THAT((*r)[1].answers, ElementsAre("X", "Y"));
}

TEST(LoadJsonlErrorsTest, BadLineReportsLineNumber) {
  auto r = LoadJsonlFile(TestData("bad_line.jsonl"), TaskFormat::kKvwire);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("bad_line.jsonl:2: invalid JSON"));
}

TEST(LoadJsonlErrorsTest, InvalidUtf8ReportsLineAndColumn) {
  auto r = LoadJsonlFile(TestData("bad_utf8.jsonl"), TaskFormat::kKvwire);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("bad_utf8.jsonl:3: invalid UTF-8 at byte column 18"));
}

TEST(LoadJsonlErrorsTest, InvalidUtf8InSquadDocument) {
  std::istringstream in("{\"data\": [\n{\"title\": \"x\xC0\xAF\"}]}");
  LoadOptions opts;
  opts.source_name = "mem";
  auto r = LoadJsonl(in, TaskFormat::kSquad, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("mem:2: invalid UTF-8 at byte column 13"));
}

TEST(LoadJsonlErrorsTest, SchemaErrorsNameLineAndField) {
  struct Case {
    TaskFormat format;
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {TaskFormat::kKvwire, R"({"question": "q", "answers": ["a"]})", "<input>:1: missing \"context\""},
      {TaskFormat::kKvwire, "{\"context\":\"c\",\"question\":\"q\",\"answers\":[\"a\"]}\n[1, 2]",
       "<input>:2: expected an object, got array"},
      {TaskFormat::kKvwire, R"({"context": "c", "question": "q", "answers": [1.5]})",
       "\"answers\" entries must be strings, got number"},
      {TaskFormat::kLongBench, R"({"input": "q", "context": "c", "answers": "a"})",
       "<input>:1: \"answers\" must be a list, got string"},
      {TaskFormat::kLongBench, R"({"input": "q", "context": "c", "answers": [], "length": "9"})",
       "\"length\" must be an integer, got string"},
      {TaskFormat::kRuler, R"({"index": 0, "input": "x"})", "<input>:1: missing \"outputs\""},
  };
  for (const Case& c : cases) {
    std::istringstream in(c.text);
    auto r = LoadJsonl(in, c.format);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.want)) << c.text;
  }
}

TEST(LoadJsonlTest, ToleratesBomCrlfAndIntegerAnswers) {
  std::istringstream in(
      "\xEF\xBB\xBF{\"context\":\"c\",\"question\":\"q\",\"answers\":[12],\"id\":\"x\"}\r\n"
      "   \r\n"
      "{\"context\":\"c2\",\"question\":\"q2\",\"answers\":[\"a\"]}\r\n");
  auto r = LoadJsonl(in, TaskFormat::kKvwire);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_THAT((*r)[0].answers, ElementsAre("12"));
  EXPECT_EQ((*r)[1].context, "c2");
}

// Regression: results are keyed by example id, so with --out a repeated id (an explicit "1" and
// the unnamed second row, or SQuAD questions without ids) silently dropped examples on resume.
TEST(LoadJsonlTest, ExampleIdsMustBeUnique) {
  std::istringstream in(
      "{\"context\":\"c\",\"question\":\"q\",\"answers\":[\"a\"],\"id\":\"1\"}\n"
      "{\"context\":\"c\",\"question\":\"q\",\"answers\":[\"a\"]}\n");
  auto r = LoadJsonl(in, TaskFormat::kKvwire);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("examples 1 and 2 have the same id \"1\""));
  std::istringstream squad(
      R"({"data": [{"paragraphs": [{"context": "c", "qas": [)"
      R"({"question": "q1", "answers": [{"text": "a"}]}, {"question": "q2", "answers": [{"text": "b"}]}]}]}]})");
  auto s = LoadJsonl(squad, TaskFormat::kSquad);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 2u);
  EXPECT_NE((*s)[0].id, (*s)[1].id);
}

// Regression: an unknown field is kept as text through json::dump(), which recursed once per
// level and crashed on a line nested 200k deep.
TEST(LoadJsonlTest, DeeplyNestedLinesAreErrors) {
  std::istringstream in("{\"context\":\"c\",\"question\":\"q\",\"answers\":[\"a\"],\"x\":" +
                        std::string(200000, '[') + std::string(200000, ']') + "}\n");
  auto r = LoadJsonl(in, TaskFormat::kKvwire);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(":1: the line nests"));
}

TEST(LoadJsonlTest, MissingFileIsNotFound) {
  auto r = LoadJsonlFile(TestData("does_not_exist.jsonl"), TaskFormat::kKvwire);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvwire::eval
