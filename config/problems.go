package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Problem is one thing wrong with a config, at a YAML path such as
// connectors.chat-api.listen or routes[0].endpoints[1].chat.
type Problem struct {
	Path    string
	Line    int // 1-based line in the file, 0 when unknown (env, defaults)
	Message string
	// Env is the environment variable the value came from, "" when it
	// came from the file or a default.
	Env string
}

func (p Problem) String() string {
	path := p.Path
	if p.Env != "" {
		if path == "" {
			path = p.Env
		} else {
			path += " (from " + p.Env + ")"
		}
	}
	if path == "" {
		return p.Message
	}
	return path + ": " + p.Message
}

// Problems is every problem found; as an error it prints one per line,
// each prefixed with file:line where known.
type Problems struct {
	File  string
	Items []Problem
}

func (ps *Problems) Error() string {
	var b strings.Builder
	for i, p := range ps.Items {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch {
		case ps.File != "" && p.Line > 0:
			fmt.Fprintf(&b, "%s:%d: ", ps.File, p.Line)
		case ps.File != "":
			fmt.Fprintf(&b, "%s: ", ps.File)
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Checker collects problems under a YAML path prefix. Connector options
// get one rooted at their section (connectors.NAME).
type Checker struct {
	prefix   string
	problems *[]Problem
}

// NewChecker returns a Checker rooted at prefix that appends to *into.
func NewChecker(prefix string, into *[]Problem) *Checker {
	return &Checker{prefix: prefix, problems: into}
}

// Path joins the checker's prefix and key into a YAML path.
func (c *Checker) Path(key string) string {
	switch {
	case c.prefix == "":
		return key
	case key == "":
		return c.prefix
	case strings.HasPrefix(key, "["):
		return c.prefix + key
	}
	return c.prefix + "." + key
}

// At returns a Checker for a nested key ("listen", "[2]", "tls.cert").
func (c *Checker) At(key string) *Checker {
	return &Checker{prefix: c.Path(key), problems: c.problems}
}

// Errorf records a problem at key.
func (c *Checker) Errorf(key, format string, args ...any) {
	addProblem(c.problems, Problem{Path: c.Path(key)}, format, args...)
}

// full reports whether the problems list is full, so that work toward a
// message (a suggestion) can be skipped.
func (c *Checker) full() bool { return len(*c.problems) >= maxProblems }

// capProblems trims items, in file order, to maxProblems, ending it with
// one moreProblems item when anything was dropped.
func capProblems(items []Problem) []Problem {
	out := items[:0]
	more := false
	for _, p := range items {
		if p.Message == moreProblems && p.Path == "" && p.Line == 0 {
			more = true
			continue
		}
		if len(out) == maxProblems {
			more = true
			break
		}
		out = append(out, p)
	}
	if more {
		out = append(out, Problem{Message: moreProblems})
	}
	return out
}

// maxProblems bounds the problems collected in one list; past it they are
// dropped. A config can make as many problems as it has values, each
// message quoting one: listing them all would take memory quadratic in
// the file's size, and no one reads past the first screen.
const maxProblems = 100

// moreProblems is the message of the item that ends a full list.
const moreProblems = "more problems not listed; fix these first"

// addProblem appends p, its message formatted, to *list. Once the list
// holds maxProblems it ends it with a moreProblems item and drops the rest.
func addProblem(list *[]Problem, p Problem, format string, args ...any) {
	switch n := len(*list); {
	case n > maxProblems:
		return
	case n == maxProblems:
		*list = append(*list, Problem{Message: moreProblems})
		return
	}
	p.Message = fmt.Sprintf(format, args...)
	*list = append(*list, p)
}

// quoted quotes a value for a message, cut short when it is long.
func quoted(s string) string {
	const keep = 64
	if len(s) <= keep {
		return strconv.Quote(s)
	}
	cut := keep
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// Required records a problem when value is empty.
func (c *Checker) Required(key, value string) bool {
	if strings.TrimSpace(value) == "" {
		c.Errorf(key, "is required")
		return false
	}
	return true
}

// OneOf records a problem when value is not one of allowed.
func (c *Checker) OneOf(key, value string, allowed ...string) bool {
	for _, a := range allowed {
		if value == a {
			return true
		}
	}
	c.Errorf(key, "%s is not one of %s", quoted(value), strings.Join(allowed, ", "))
	return false
}

// ListenAddr records a problem unless value is host:port with a valid port
// (host may be empty for every interface).
func (c *Checker) ListenAddr(key, value string) bool {
	if !c.Required(key, value) {
		return false
	}
	host, port, err := net.SplitHostPort(value)
	if err != nil {
		c.Errorf(key, "%s is not host:port (e.g. 127.0.0.1:8780)", quoted(value))
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.Errorf(key, "%s has a bad port (0-65535)", quoted(value))
		return false
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		c.Errorf(key, "%s has a bad host", quoted(value))
		return false
	}
	return true
}

// Positive records a problem when n < 1.
func (c *Checker) Positive(key string, n int64) bool {
	if n < 1 {
		c.Errorf(key, "must be at least 1 (got %d)", n)
		return false
	}
	return true
}
