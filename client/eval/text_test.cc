#include "client/eval/text.h"

#include <string>

#include "gtest/gtest.h"

namespace kvwire::eval::text {
namespace {

TEST(TextTest, Utf8RoundTrip) {
  const std::string s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80";  // a é 中 😀
  const std::u32string u = Decode(s);
  ASSERT_EQ(u.size(), 4u);
  EXPECT_EQ(u[1], 0xE9u);
  EXPECT_EQ(u[2], 0x4E2Du);
  EXPECT_EQ(u[3], 0x1F600u);
  EXPECT_EQ(Encode(u), s);
}

TEST(TextTest, FindInvalidUtf8) {
  EXPECT_EQ(FindInvalidUtf8("plain \xC3\xA9"), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\xFF"), 2u);
  EXPECT_EQ(FindInvalidUtf8("\xC0\x80"), 0u);          // overlong NUL
  EXPECT_EQ(FindInvalidUtf8("x\xED\xA0\x80"), 1u);     // UTF-16 surrogate
  EXPECT_EQ(FindInvalidUtf8("xy\xE2\x82"), 2u);        // truncated
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
}

TEST(TextTest, DecodeReplacesBadBytes) {
  EXPECT_EQ(Decode("a\xFF" "b"), U"a\uFFFDb");
}

TEST(TextTest, LowerFollowsPython) {
  EXPECT_EQ(Encode(Lower(Decode("ÀÉÎ Zürich ΣΟΦΙΑ ЖУК Ǆ"))), "àéî zürich σοφια жук ǆ");
  EXPECT_EQ(Lower(U"\u0130"), U"i\u0307");  // 'İ'.lower() has two code points
  EXPECT_EQ(Lower(U"ŸĹĽ"), U"ÿĺľ");
}

TEST(TextTest, SplitWhitespaceUsesUnicodeSpaces) {
  const auto toks = SplitWhitespace(U"  a\u00A0b\u3000c\x1F" "d\n");
  ASSERT_EQ(toks.size(), 4u);
  EXPECT_EQ(toks[0], U"a");
  EXPECT_EQ(toks[3], U"d");
  EXPECT_EQ(CollapseWhitespace(U" x \t y "), U"x y");
  EXPECT_EQ(StripWhitespace(U"\u2003 z \n"), U"z");
}

TEST(TextTest, CharacterClasses) {
  EXPECT_TRUE(IsWordChar(U'_'));
  EXPECT_TRUE(IsWordChar(U'é'));
  EXPECT_TRUE(IsWordChar(U'中'));
  EXPECT_TRUE(IsWordChar(U'²'));  // numeric, so alnum in Python
  EXPECT_FALSE(IsWordChar(U'-'));
  EXPECT_FALSE(IsWordChar(U'“'));
  EXPECT_FALSE(IsWordChar(U'，'));
  EXPECT_FALSE(IsWordChar(0x301));  // combining acute accent
  EXPECT_TRUE(IsDecimalDigit(U'7'));
  EXPECT_TRUE(IsDecimalDigit(0x663));   // Arabic-Indic three
  EXPECT_TRUE(IsDecimalDigit(0xFF15));  // fullwidth five
  EXPECT_FALSE(IsDecimalDigit(U'²'));   // \d is Nd only
}

}  // namespace
}  // namespace kvwire::eval::text
