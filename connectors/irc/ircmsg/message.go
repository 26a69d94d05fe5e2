// Package ircmsg reads and writes single IRC protocol lines: RFC 1459/2812
// syntax with IRCv3 message tags. It also splits outgoing text so each line
// fits the server's limit, and strips mIRC formatting codes.
//
// IRC is a byte protocol. Nothing here checks or repairs UTF-8: invalid
// sequences pass through Parse and the writers unchanged, and SplitText only
// promises not to cut inside a sequence that is valid. Callers that need
// valid UTF-8 (Matrix, JSON) must repair it themselves, e.g. with
// strings.ToValidUTF8.
package ircmsg

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on the length of one line.
const (
	// MaxLineLen bounds everything after the tags section, CRLF included
	// (RFC 1459 §2.3).
	MaxLineLen = 512
	// MaxTagsLen bounds the tags section, counting its leading '@' and the
	// space after it (IRCv3 message-tags).
	MaxTagsLen = 8191
)

// Error classes. Errors from Parse and Validate wrap one of these, with a
// short reason that never quotes the offending input (it may be hostile).
var (
	ErrEmpty     = errors.New("ircmsg: empty line")
	ErrTooLong   = errors.New("ircmsg: line too long")
	ErrMalformed = errors.New("ircmsg: malformed line")
	ErrInvalid   = errors.New("ircmsg: invalid message")
)

// Message is one IRC line.
type Message struct {
	// Tags holds IRCv3 message tags with their values unescaped. A tag sent
	// without a value (or with an empty one) has the value "". Nil when the
	// line has no tags.
	Tags map[string]string
	// Source is the prefix without its ':': "nick!user@host", a bare nick,
	// or a server name. Empty when the line has none.
	Source string
	// Command is upper-cased letters, or a three-digit numeric ("001").
	Command string
	// Params holds the parameters in order, the trailing one last and
	// without its ':'. Nil when there are none.
	Params []string
}

// Nick returns the nick part of Source: what precedes '!' or '@'. For a
// server source, which has neither, it is the whole server name.
func (m *Message) Nick() string {
	if i := strings.IndexAny(m.Source, "!@"); i >= 0 {
		return m.Source[:i]
	}
	return m.Source
}

// Param returns parameter i, or "" when there is no such parameter.
func (m *Message) Param(i int) string {
	if i < 0 || i >= len(m.Params) {
		return ""
	}
	return m.Params[i]
}

// Trailing returns the last parameter, or "" when there are none. Parse
// does not record whether it was written with a ':'; that is syntax, not
// meaning.
func (m *Message) Trailing() string {
	if len(m.Params) == 0 {
		return ""
	}
	return m.Params[len(m.Params)-1]
}

func malformed(reason string) error { return fmt.Errorf("%w: %s", ErrMalformed, reason) }

// Parse reads one line. Trailing CR and LF are removed; any other CR, LF or
// NUL makes the line malformed, so nothing Parse accepts can smuggle a
// second line into whatever later re-sends its parts. Runs of spaces
// between parts are tolerated, and so is a tags section holding no tag.
// Tag keys are not checked against the IRCv3 key grammar beyond being
// non-empty, because servers in the wild send keys that break it. A line
// longer than the limits (MaxTagsLen, MaxLineLen) is ErrTooLong.
//
// The returned strings share memory with line.
func Parse(line string) (*Message, error) {
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	if strings.IndexAny(line, "\r\n\x00") >= 0 {
		return nil, malformed("CR, LF or NUL inside the line")
	}
	m := &Message{}
	if len(line) > 0 && line[0] == '@' {
		sp := strings.IndexByte(line, ' ')
		if sp < 0 {
			return nil, malformed("missing command")
		}
		if sp+1 > MaxTagsLen {
			return nil, fmt.Errorf("%w: tags section over %d bytes", ErrTooLong, MaxTagsLen)
		}
		tags, err := parseTags(line[1:sp])
		if err != nil {
			return nil, err
		}
		m.Tags = tags
		line = line[sp+1:]
	}
	// The limit counts the CRLF we removed (or that the sender omitted).
	if len(line)+2 > MaxLineLen {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLong, MaxLineLen)
	}
	line = trimLeadingSpaces(line)
	if line == "" {
		if m.Tags != nil {
			return nil, malformed("missing command")
		}
		return nil, ErrEmpty
	}
	if line[0] == ':' {
		sp := strings.IndexByte(line, ' ')
		if sp < 0 {
			return nil, malformed("missing command")
		}
		if sp == 1 {
			return nil, malformed("empty source")
		}
		m.Source = line[1:sp]
		line = trimLeadingSpaces(line[sp+1:])
		if line == "" {
			return nil, malformed("missing command")
		}
	}
	cmd := line
	line = ""
	if sp := strings.IndexByte(cmd, ' '); sp >= 0 {
		cmd, line = cmd[:sp], cmd[sp+1:]
	}
	if !validCommand(cmd) {
		return nil, malformed("invalid command")
	}
	m.Command = upperASCII(cmd)
	for {
		line = trimLeadingSpaces(line)
		if line == "" {
			break
		}
		if m.Params == nil {
			// One allocation sized for the common case.
			m.Params = make([]string, 0, min(strings.Count(line, " ")+1, 15))
		}
		if line[0] == ':' {
			m.Params = append(m.Params, line[1:])
			break
		}
		sp := strings.IndexByte(line, ' ')
		if sp < 0 {
			m.Params = append(m.Params, line)
			break
		}
		m.Params = append(m.Params, line[:sp])
		line = line[sp+1:]
	}
	return m, nil
}

// parseTags reads the tags section between '@' and the first space. Empty
// items (";;", a trailing ';') are skipped; a repeated key keeps its last
// value. No tags at all gives nil.
func parseTags(s string) (map[string]string, error) {
	var tags map[string]string
	for s != "" {
		var item string
		item, s, _ = strings.Cut(s, ";")
		if item == "" {
			continue
		}
		key, value, _ := strings.Cut(item, "=")
		if key == "" {
			return nil, malformed("empty tag key")
		}
		if tags == nil {
			tags = make(map[string]string, strings.Count(s, ";")+1)
		}
		tags[key] = unescapeTag(value)
	}
	return tags, nil
}

// unescapeTag undoes IRCv3 tag value escaping: \: \s \\ \r \n; any other
// escaped character stands for itself and a lone trailing backslash is
// dropped.
func unescapeTag(v string) string {
	i := strings.IndexByte(v, '\\')
	if i < 0 {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	b.WriteString(v[:i])
	for ; i < len(v); i++ {
		c := v[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(v) {
			break
		}
		switch c = v[i]; c {
		case ':':
			b.WriteByte(';')
		case 's':
			b.WriteByte(' ')
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		default: // '\\' and unknown escapes
			b.WriteByte(c)
		}
	}
	return b.String()
}

// validCommand reports whether s is letters only, or exactly three digits.
func validCommand(s string) bool {
	if s == "" {
		return false
	}
	if isDigit(s[0]) {
		return len(s) == 3 && isDigit(s[1]) && isDigit(s[2])
	}
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func upperASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			return strings.ToUpper(s)
		}
	}
	return s
}

func trimLeadingSpaces(s string) string {
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	return s
}
