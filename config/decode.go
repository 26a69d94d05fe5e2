package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder turns a yaml.Node tree into the typed structs by hand rather
// than with yaml.v3's Decode, so that an unknown key, a duplicate key or a
// bad value becomes a Problem naming its YAML path and line, and so that
// decoding goes on after the first one.
type decoder struct {
	problems []Problem
	// lines maps a YAML path to the line of its key (or list item) in the
	// file; validation problems find their line here.
	lines map[string]int
	// secretValues holds the paths of secret keys given a value in the
	// file, secretFiles their <key>_file siblings.
	secretValues map[string]bool
	secretFiles  map[string]secretRef
	dupReported  map[*yaml.Node]bool
	// left is how many more values decoding may visit; tooBig says it ran
	// out. merging lists the mappings whose entries are being gathered, so
	// a merge key that brings a mapping into itself is caught rather than
	// recursed into.
	left    int
	tooBig  *Problem
	merging map[*yaml.Node]bool
}

// maxKeyBytes bounds a mapping key (a field, a connector's name, an IRC
// channel's).
const maxKeyBytes = 256

// maxValues bounds the values decoding visits, counting a value again
// each time an alias or a merge key brings it in: a few hundred bytes of
// nested aliases (a "billion laughs") would otherwise expand to billions.
// No real config comes near it.
const maxValues = 100_000

// secretRef is a <key>_file entry: the file to read a secret from.
type secretRef struct {
	file string
	line int
	env  string // the variable that gave it; "" for the file
}

func newDecoder() *decoder {
	return &decoder{
		lines:        map[string]int{},
		secretValues: map[string]bool{},
		secretFiles:  map[string]secretRef{},
		dupReported:  map[*yaml.Node]bool{},
		left:         maxValues,
		merging:      map[*yaml.Node]bool{},
	}
}

// spend counts one value visited at n. Past maxValues it records the
// problem in tooBig and returns false, and decoding stops.
func (d *decoder) spend(n *yaml.Node) bool {
	if d.left > 0 {
		d.left--
		return true
	}
	if d.tooBig == nil {
		d.tooBig = &Problem{Message: fmt.Sprintf("the config expands to more than %d values, counting a value each time an alias (*name) or merge key (<<) uses it; refusing it", maxValues)}
		if n != nil {
			d.tooBig.Line = n.Line
		}
	}
	return false
}

func (d *decoder) problemAt(line int, path, format string, args ...any) {
	addProblem(&d.problems, Problem{Path: path, Line: line}, format, args...)
}

func (d *decoder) problem(path, format string, args ...any) {
	d.problemAt(d.lineOf(path), path, format, args...)
}

// lineOf returns the line of path, or of its nearest ancestor in the file
// (a missing key is reported at the section that lacks it), or 0.
func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return 0
}

// parentPath strips the last ".key" or "[i]" from a YAML path.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// joinPath appends key to a YAML path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var (
	durationType     = reflect.TypeFor[time.Duration]()
	connectorsType   = reflect.TypeFor[map[string]*Connector]()
	textUnmarshalerT = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// resolve follows aliases (with a bound, in case of a cycle).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports an absent or null value (`key:`, `key: ~`). A null keeps
// the default, as a missing key does.
func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// describeNode says what a node is, for "expected X, got Y". Secret
// values are never shown.
func describeNode(n *yaml.Node, secret bool) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if secret {
		return "a value"
	}
	return quoted(n.Value)
}

// describeType says what a Go type wants, for "expected X, got Y".
func describeType(t reflect.Type) string {
	if t == durationType {
		return "a duration (e.g. 500ms, 30s, 5m)"
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerT) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Pointer:
		return describeType(t.Elem())
	}
	return "a " + t.String()
}

// entry is one key: value pair of a mapping.
type entry struct{ key, val *yaml.Node }

// entries lists a mapping's pairs, reporting non-string and duplicate keys
// at path. Merge keys (<<: *anchor) are expanded; keys given explicitly
// win over merged ones, as YAML says.
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	d.merging[n] = true
	defer delete(d.merging, n)
	seen := map[string]int{}
	var own, merged []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !d.spend(n.Content[i]) {
			return nil
		}
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.problemAt(k.Line, path, "mapping keys must be plain strings, got %s", describeNode(k, false))
			continue
		}
		if k.Tag == "!!merge" {
			merged = append(merged, d.mergeEntries(v, path)...)
			continue
		}
		if len(k.Value) > maxKeyBytes {
			// Every path below a key repeats it: a long one would be
			// copied once per value under it.
			d.problemAt(k.Line, path, "key %s is too long; keys are names of at most %d bytes", quoted(k.Value), maxKeyBytes)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			// A mapping merged in several places is listed each time;
			// its duplicates are reported once.
			if !d.dupReported[k] {
				d.dupReported[k] = true
				d.problemAt(k.Line, joinPath(path, k.Value), "duplicate key (first at line %d)", first)
			}
			continue
		}
		seen[k.Value] = k.Line
		own = append(own, entry{k, v})
	}
	var out []entry
	for _, e := range merged {
		if _, ok := seen[e.key.Value]; !ok {
			seen[e.key.Value] = e.key.Line
			out = append(out, e)
		}
	}
	return append(out, own...)
}

// mergeEntries expands the value of a << key: a mapping or a list of them.
func (d *decoder) mergeEntries(v *yaml.Node, path string) []entry {
	at := v
	v = resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		return d.mergeMapping(at, v, path)
	case yaml.SequenceNode:
		var out []entry
		for _, el := range v.Content {
			if m := resolve(el); m.Kind == yaml.MappingNode {
				out = append(out, d.mergeMapping(el, m, path)...)
			} else {
				d.problemAt(m.Line, joinPath(path, "<<"), "expected a mapping to merge, got %s", describeNode(m, false))
			}
		}
		return out
	}
	d.problemAt(v.Line, joinPath(path, "<<"), "expected a mapping to merge, got %s", describeNode(v, false))
	return nil
}

// mergeMapping returns the entries of m, merged in at the node at (m or
// an alias of it), unless m is a mapping being gathered already: merging
// a mapping into itself would never end.
func (d *decoder) mergeMapping(at, m *yaml.Node, path string) []entry {
	if d.merging[m] {
		d.problemAt(at.Line, joinPath(path, "<<"), "merges a mapping into itself (or into a mapping it holds)")
		return nil
	}
	return d.entries(m, path)
}

// field is one decodable struct field.
type field struct {
	name   string
	index  []int
	typ    reflect.Type
	secret bool
}

// fieldsOf lists the keys a struct type accepts, by its yaml tags (the
// lowercased field name when untagged, as yaml.v3 does), flattening
// `yaml:",inline"` fields.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for _, f := range fieldsOf(ft) {
					f.index = append([]int{i}, f.index...)
					out = append(out, f)
				}
				continue
			}
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, field{
			name:   name,
			index:  []int{i},
			typ:    sf.Type,
			secret: sf.Tag.Get("secret") == "true" && sf.Type.Kind() == reflect.String,
		})
	}
	return out
}

// fieldValue returns the field at index, allocating nil embedded pointers
// on the way.
func fieldValue(v reflect.Value, index []int) reflect.Value {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v
}

func fieldNames(fs []field) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return names
}

// value decodes n into v, which is settable, at path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, secret bool) {
	n = resolve(n)
	// Nulls count too: a list of them still takes room once decoded.
	if !d.spend(n) || isNull(n) {
		return
	}
	t := v.Type()
	if t == connectorsType {
		d.connectors(n, v, path)
		return
	}
	if t == durationType || reflect.PointerTo(t).Implements(textUnmarshalerT) || isScalarKind(t.Kind()) {
		if n.Kind != yaml.ScalarNode {
			d.problem(path, "expected %s, got %s", describeType(t), describeNode(n, secret))
			return
		}
		if msg := setScalar(v, n.Value, secret); msg != "" {
			d.problem(path, "%s", msg)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.value(n, v.Elem(), path, secret)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.problem(path, "expected a mapping, got %s", describeNode(n, secret))
			return
		}
		d.structure(d.entries(n, path), v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, "expected a list, got %s", describeNode(n, secret))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, el := range n.Content {
			p := indexPath(path, i)
			d.lines[p] = el.Line
			d.value(el, s.Index(i), p, secret)
		}
		v.Set(s)
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			d.problem(path, "cannot be set from YAML (unsupported type %s)", t)
			return
		}
		if n.Kind != yaml.MappingNode {
			d.problem(path, "expected a mapping, got %s", describeNode(n, secret))
			return
		}
		m := reflect.MakeMap(t)
		for _, e := range d.entries(n, path) {
			p := joinPath(path, e.key.Value)
			d.lines[p] = e.key.Line
			k := reflect.New(t.Key()).Elem()
			k.SetString(e.key.Value)
			ev := reflect.New(t.Elem()).Elem()
			d.value(e.val, ev, p, secret)
			m.SetMapIndex(k, ev)
		}
		v.Set(m)
	case reflect.Interface:
		if t.NumMethod() != 0 {
			d.problem(path, "cannot be set from YAML (unsupported type %s)", t)
			return
		}
		var x any
		if err := n.Decode(&x); err != nil {
			d.problem(path, "%v", err)
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		d.problem(path, "cannot be set from YAML (unsupported type %s)", t)
	}
}

// structure decodes a mapping's entries into struct v: every key must be
// a field, or the <key>_file of a secret field.
func (d *decoder) structure(es []entry, v reflect.Value, path string) {
	fs := fieldsOf(v.Type())
	byName := make(map[string]field, len(fs))
	for _, f := range fs {
		byName[f.name] = f
	}
	for _, e := range es {
		key := e.key.Value
		p := joinPath(path, key)
		d.lines[p] = e.key.Line
		f, ok := byName[key]
		if !ok {
			if base, isFile := strings.CutSuffix(key, "_file"); isFile && byName[base].secret {
				d.secretFile(e, joinPath(path, base))
				continue
			}
			d.problemAt(e.key.Line, p, "unknown key%s", suggestion(key, fieldNames(fs)))
			continue
		}
		// An empty value (the example file's token: "") does not clash
		// with a <key>_file.
		if sv := resolve(e.val); f.secret && !isNull(sv) && !(sv.Kind == yaml.ScalarNode && sv.Value == "") {
			d.secretValues[p] = true
		}
		d.value(e.val, fieldValue(v, f.index), p, f.secret)
	}
}

// secretFile records a <key>_file entry; the file is read once env
// overrides are known.
func (d *decoder) secretFile(e entry, secretPath string) {
	v := resolve(e.val)
	if isNull(v) {
		return
	}
	if v.Kind != yaml.ScalarNode {
		d.problemAt(e.key.Line, secretPath+"_file", "expected a file name, got %s", describeNode(v, false))
		return
	}
	d.secretFiles[secretPath] = secretRef{file: v.Value, line: e.key.Line}
}

// connectors decodes the connectors mapping: NAME → {type, options...}.
// A section whose type is missing or unknown keeps Options nil; Validate
// reports it, and its other keys go unchecked since their meaning depends
// on the type.
func (d *decoder) connectors(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.problem(path, "expected a mapping of connector names to sections, got %s", describeNode(n, false))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	m := v.Interface().(map[string]*Connector)
	for _, e := range d.entries(n, path) {
		name := e.key.Value
		p := joinPath(path, name)
		d.lines[p] = e.key.Line
		c := &Connector{Name: name}
		m[name] = c
		sec := resolve(e.val)
		if isNull(sec) {
			continue
		}
		if sec.Kind != yaml.MappingNode {
			d.problem(p, "expected a mapping with type: and the connector's options, got %s", describeNode(sec, false))
			continue
		}
		var rest []entry
		for _, se := range d.entries(sec, p) {
			if se.key.Value != "type" {
				rest = append(rest, se)
				continue
			}
			tp := joinPath(p, "type")
			d.lines[tp] = se.key.Line
			tv := resolve(se.val)
			if isNull(tv) {
				continue
			}
			if tv.Kind != yaml.ScalarNode {
				d.problem(tp, "expected a connector type name, got %s", describeNode(tv, false))
				continue
			}
			c.Type = tv.Value
		}
		newOptions, ok := connectorType(c.Type)
		if !ok {
			if c.Type == "" {
				// Point at a misspelt type: (Validate says it is missing).
				for _, se := range rest {
					if closest(se.key.Value, []string{"type"}) != "" {
						d.problemAt(se.key.Line, joinPath(p, se.key.Value), "unknown key (did you mean type?)")
					}
				}
			}
			continue
		}
		var opts any
		if newOptions != nil {
			opts = newOptions()
		}
		ov := reflect.ValueOf(opts)
		if opts == nil {
			// A type without options: every key but type is unknown.
			d.structure(rest, reflect.New(reflect.TypeFor[struct{}]()).Elem(), p)
			continue
		}
		if ov.Kind() != reflect.Pointer || ov.IsNil() || ov.Elem().Kind() != reflect.Struct {
			d.problem(p, "connector type %q has unusable options (%T); this is a bug in phonebridge", c.Type, opts)
			continue
		}
		d.structure(rest, ov.Elem(), p)
		c.Options = opts
	}
}

func isScalarKind(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// setScalar parses s into v (a scalar, time.Duration or TextUnmarshaler)
// and returns "" or what is wrong, without a path. Both the file and the
// environment come through here, so both accept the same spellings.
func setScalar(v reflect.Value, s string, secret bool) string {
	shown := quoted(s)
	if secret {
		shown = "the value"
	}
	t := v.Type()
	if t == durationType {
		dur, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			if _, nerr := strconv.ParseFloat(strings.TrimSpace(s), 64); nerr == nil {
				return fmt.Sprintf("%s is not a duration: add a unit (e.g. 500ms, 30s, 5m)", shown)
			}
			return fmt.Sprintf("%s is not a duration (e.g. 500ms, 30s, 5m)", shown)
		}
		v.SetInt(int64(dur))
		return ""
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerT) {
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			if secret {
				return "the value is not valid"
			}
			return fmt.Sprintf("%s is not valid: %v", shown, err)
		}
		return ""
	}
	switch t.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true", "yes", "on", "1":
			v.SetBool(true)
		case "false", "no", "off", "0":
			v.SetBool(false)
		default:
			return fmt.Sprintf("expected true or false, got %s", shown)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 0, t.Bits())
		if err != nil {
			if isRange(err) {
				return fmt.Sprintf("%s is out of range", shown)
			}
			return fmt.Sprintf("expected an integer, got %s", shown)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 0, t.Bits())
		if err != nil {
			if isRange(err) {
				return fmt.Sprintf("%s is out of range", shown)
			}
			return fmt.Sprintf("expected a non-negative integer, got %s", shown)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), t.Bits())
		if err != nil {
			if isRange(err) {
				return fmt.Sprintf("%s is out of range", shown)
			}
			return fmt.Sprintf("expected a number, got %s", shown)
		}
		v.SetFloat(f)
	default:
		return fmt.Sprintf("cannot be set from a string (unsupported type %s)", t)
	}
	return ""
}

func isRange(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// maxKnownListed is the most names an "unknown" message lists; a list of
// the config's own connectors can be as long as the config.
const maxKnownListed = 20

// suggestion returns " (did you mean X?)" for the known name closest to
// got, or " (known: ...)" when none is close, for an "unknown" message.
func suggestion(got string, known []string) string {
	if best := closest(got, known); best != "" {
		return " (did you mean " + best + "?)"
	}
	if len(known) == 0 || len(known) > maxKnownListed {
		return ""
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return " (known: " + strings.Join(sorted, ", ") + ")"
}

// closest returns the known name within edit distance 2 of got (at most
// half its length, or short names would match nearly anything), or one
// that is a prefix of got or has got as its prefix; "" if none.
func closest(got string, known []string) string {
	if len(got) > maxKeyBytes {
		return "" // not a typo of a name, and edit distance is quadratic
	}
	g := strings.ToLower(got)
	maxDist := min(2, len([]rune(g))/2)
	best, bestDist := "", maxDist+1
	for _, k := range known {
		dist := levenshtein(g, strings.ToLower(k))
		if dist < bestDist || (dist == bestDist && best != "" && k < best) {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return best
	}
	for _, k := range known {
		kl := strings.ToLower(k)
		short := min(len(g), len(kl))
		if short >= 3 && (strings.HasPrefix(g, kl) || strings.HasPrefix(kl, g)) {
			if best == "" || len(k) > len(best) || (len(k) == len(best) && k < best) {
				best = k
			}
		}
	}
	return best
}

// levenshtein is the edit distance between a and b, in runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
