#include "dsl/lexer.hpp"

#include <cstdio>
#include <limits>
#include <string>

namespace loom::dsl {

const char* describe(tok t) {
  switch (t) {
    case tok::end: return "end of file";
    case tok::error: return "an invalid character";
    case tok::identifier: return "a name";
    case tok::integer: return "a number";
    case tok::string: return "a string";
    case tok::kw_schedule: return "'schedule'";
    case tok::kw_import: return "'import'";
    case tok::kw_require: return "'require'";
    case tok::kw_let: return "'let'";
    case tok::kw_if: return "'if'";
    case tok::kw_else: return "'else'";
    case tok::kw_for: return "'for'";
    case tok::kw_in: return "'in'";
    case tok::kw_repeat: return "'repeat'";
    case tok::kw_pipeline: return "'pipeline'";
    case tok::kw_stages: return "'stages'";
    case tok::kw_microbatches: return "'microbatches'";
    case tok::kw_place: return "'place'";
    case tok::kw_rank: return "'rank'";
    case tok::kw_chunk: return "'chunk'";
    case tok::kw_overlap: return "'overlap'";
    case tok::kw_stream: return "'stream'";
    case tok::kw_experts: return "'experts'";
    case tok::kw_true: return "'true'";
    case tok::kw_false: return "'false'";
    case tok::kw_program: return "'program'";
    case tok::act_F: return "'F'";
    case tok::act_B: return "'B'";
    case tok::act_I: return "'I'";
    case tok::act_W: return "'W'";
    case tok::lparen: return "'('";
    case tok::rparen: return "')'";
    case tok::lbrace: return "'{'";
    case tok::rbrace: return "'}'";
    case tok::lbracket: return "'['";
    case tok::rbracket: return "']'";
    case tok::comma: return "','";
    case tok::semicolon: return "';'";
    case tok::dot: return "'.'";
    case tok::dotdot: return "'..'";
    case tok::assign: return "'='";
    case tok::plus: return "'+'";
    case tok::minus: return "'-'";
    case tok::star: return "'*'";
    case tok::slash: return "'/'";
    case tok::percent: return "'%'";
    case tok::amp: return "'&'";
    case tok::ampamp: return "'&&'";
    case tok::pipepipe: return "'||'";
    case tok::bang: return "'!'";
    case tok::eq: return "'=='";
    case tok::ne: return "'!='";
    case tok::lt: return "'<'";
    case tok::le: return "'<='";
    case tok::gt: return "'>'";
    case tok::ge: return "'>='";
    case tok::colon: return "':'";
  }
  return "a token";
}

namespace {

struct keyword {
  std::string_view text;
  tok kind;
};

constexpr keyword keywords[] = {
    {"schedule", tok::kw_schedule}, {"import", tok::kw_import},   {"require", tok::kw_require},
    {"let", tok::kw_let},           {"if", tok::kw_if},           {"else", tok::kw_else},
    {"for", tok::kw_for},           {"in", tok::kw_in},           {"repeat", tok::kw_repeat},
    {"pipeline", tok::kw_pipeline}, {"stages", tok::kw_stages},   {"microbatches", tok::kw_microbatches},
    {"place", tok::kw_place},       {"rank", tok::kw_rank},       {"chunk", tok::kw_chunk},
    {"overlap", tok::kw_overlap},   {"stream", tok::kw_stream},   {"experts", tok::kw_experts},
    {"true", tok::kw_true},         {"false", tok::kw_false},     {"program", tok::kw_program},     {"F", tok::act_F},
    {"B", tok::act_B},              {"I", tok::act_I},            {"W", tok::act_W},
};

bool ident_start(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool ident_char(unsigned char c) { return ident_start(c) || (c >= '0' && c <= '9'); }
bool digit(unsigned char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::vector<token> lex(const source_set& sources, std::uint32_t file_id, diagnostic_list& diags) {
  const source_file& f = sources.file(file_id);
  const std::string& s = f.text;
  const std::size_t n = s.size();
  std::vector<token> out;
  std::size_t i = 0;
  bool line_start = true;
  auto loc = [&](std::size_t at) { return f.loc_of(file_id, at); };
  auto push = [&](tok k, std::size_t begin, std::size_t end) {
    token t;
    t.kind = k;
    t.text = std::string_view(s).substr(begin, end - begin);
    t.loc = loc(begin);
    t.line_start = line_start;
    line_start = false;
    out.push_back(t);
    return &out.back();
  };

  while (i < n && !diags.full()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') { line_start = true; ++i; continue; }
    if (c == ' ' || c == '\t' || c == '\r') { ++i; continue; }
    if (c == '/' && i + 1 < n && s[i + 1] == '/') {
      while (i < n && s[i] != '\n') ++i;
      continue;
    }
    if (c == '/' && i + 1 < n && s[i + 1] == '*') {
      std::size_t start = i;
      i += 2;
      while (i + 1 < n && !(s[i] == '*' && s[i + 1] == '/')) ++i;
      if (i + 1 >= n) {
        diags.error(loc(start), "unterminated comment: '/*' has no matching '*/'");
        i = n;
        break;
      }
      i += 2;
      continue;
    }
    std::size_t begin = i;
    if (ident_start(c)) {
      while (i < n && ident_char(static_cast<unsigned char>(s[i]))) ++i;
      std::string_view word = std::string_view(s).substr(begin, i - begin);
      tok kind = tok::identifier;
      for (const auto& k : keywords)
        if (k.text == word) kind = k.kind;
      push(kind, begin, i);
      continue;
    }
    if (digit(c)) {
      std::int64_t value = 0;
      bool overflow = false;
      while (i < n && digit(static_cast<unsigned char>(s[i]))) {
        int d = s[i] - '0';
        if (value > (std::numeric_limits<std::int64_t>::max() - d) / 10) overflow = true;
        else value = value * 10 + d;
        ++i;
      }
      if (i < n && ident_start(static_cast<unsigned char>(s[i]))) {
        diags.error(loc(begin), "a number cannot be followed directly by a letter");
        while (i < n && ident_char(static_cast<unsigned char>(s[i]))) ++i;
        push(tok::error, begin, i);
        continue;
      }
      if (overflow) diags.error(loc(begin), "integer literal does not fit in 64 bits");
      push(tok::integer, begin, i)->value = overflow ? 0 : value;
      continue;
    }
    if (c == '"') {
      ++i;
      while (i < n && s[i] != '"' && s[i] != '\n') {
        if (s[i] == '\\' && i + 1 < n && s[i + 1] != '\n') ++i;
        ++i;
      }
      if (i >= n || s[i] != '"') {
        diags.error(loc(begin), "unterminated string: a string must end with '\"' on the same line");
        push(tok::error, begin, i);
        continue;
      }
      ++i;
      push(tok::string, begin, i);
      continue;
    }
    auto two = [&](char second) { return i + 1 < n && s[i + 1] == second; };
    tok kind = tok::error;
    std::size_t len = 1;
    switch (c) {
      case '(': kind = tok::lparen; break;
      case ')': kind = tok::rparen; break;
      case '{': kind = tok::lbrace; break;
      case '}': kind = tok::rbrace; break;
      case '[': kind = tok::lbracket; break;
      case ']': kind = tok::rbracket; break;
      case ',': kind = tok::comma; break;
      case ';': kind = tok::semicolon; break;
      case ':': kind = tok::colon; break;
      case '+': kind = tok::plus; break;
      case '-': kind = tok::minus; break;
      case '*': kind = tok::star; break;
      case '/': kind = tok::slash; break;
      case '%': kind = tok::percent; break;
      case '.': if (two('.')) { kind = tok::dotdot; len = 2; } else kind = tok::dot; break;
      case '=': if (two('=')) { kind = tok::eq; len = 2; } else kind = tok::assign; break;
      case '!': if (two('=')) { kind = tok::ne; len = 2; } else kind = tok::bang; break;
      case '<': if (two('=')) { kind = tok::le; len = 2; } else kind = tok::lt; break;
      case '>': if (two('=')) { kind = tok::ge; len = 2; } else kind = tok::gt; break;
      case '&': if (two('&')) { kind = tok::ampamp; len = 2; } else kind = tok::amp; break;
      case '|': if (two('|')) { kind = tok::pipepipe; len = 2; } break;
      default: break;
    }
    if (kind == tok::error) {
      // One error for a whole run of unusable bytes (binary input would otherwise flood the output).
      bool printable = c >= 0x21 && c < 0x7f;
      ++i;
      while (!printable && i < n) {
        unsigned char b = static_cast<unsigned char>(s[i]);
        if ((b >= 0x20 && b < 0x7f) || b == '\n' || b == '\t' || b == '\r') break;
        ++i;
      }
      char buf[96];
      if (c >= 0x21 && c < 0x7f) std::snprintf(buf, sizeof buf, "unexpected character '%c'", c);
      else std::snprintf(buf, sizeof buf, "unexpected byte 0x%02x (not a character of the language)", c);
      diags.error(loc(begin), buf);
      push(tok::error, begin, i);
      continue;
    }
    i += len;
    push(kind, begin, i);
  }
  token end;
  end.kind = tok::end;
  end.loc = loc(n);
  end.line_start = true;
  out.push_back(end);
  return out;
}

std::string string_value(const token& t) {
  std::string out;
  std::string_view body = t.text.size() >= 2 ? t.text.substr(1, t.text.size() - 2) : std::string_view{};
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\\' && i + 1 < body.size()) {
      char e = body[++i];
      out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
    } else {
      out += body[i];
    }
  }
  return out;
}

}  // namespace loom::dsl
