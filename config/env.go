package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/viper"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = "PHONEBRIDGE"

var envReplacer = strings.NewReplacer(".", "_", "-", "_")

// EnvVar returns the environment variable that overrides the key at a
// YAML path: EnvVar("connectors.chat-api.token") is
// PHONEBRIDGE_CONNECTORS_CHAT_API_TOKEN.
func EnvVar(path string) string {
	return strings.ToUpper(envReplacer.Replace(EnvPrefix + "_" + path))
}

// leaf is a scalar key that an environment variable can override.
type leaf struct {
	path   string
	secret bool
	// get returns the field, allocating nil pointers on the way, so that
	// an override can fill a section the file left out.
	get func() reflect.Value
}

// leaves lists the scalar keys of struct type t at path. Lists and maps
// are left out: their keys are not known in advance.
func leaves(t reflect.Type, path string, get func() reflect.Value, inside map[reflect.Type]bool, out *[]leaf) {
	if inside[t] {
		return // a recursive type; its keys are reachable from the file only
	}
	inside[t] = true
	defer delete(inside, t)
	for _, f := range fieldsOf(t) {
		p := joinPath(path, f.name)
		fget := func() reflect.Value { return fieldValue(get(), f.index) }
		ft := f.typ
		if ft.Kind() == reflect.Pointer {
			elem, inner := ft.Elem(), fget
			fget = func() reflect.Value {
				v := inner()
				if v.IsNil() {
					v.Set(reflect.New(elem))
				}
				return v.Elem()
			}
			ft = elem
		}
		switch {
		case ft == durationType || reflect.PointerTo(ft).Implements(textUnmarshalerT) || isScalarKind(ft.Kind()):
			*out = append(*out, leaf{path: p, secret: f.secret, get: fget})
		case ft.Kind() == reflect.Struct:
			leaves(ft, p, fget, inside, out)
		}
	}
}

// configLeaves lists every overridable key of cfg: the top-level sections
// and the options of each connector whose type is known.
func configLeaves(cfg *Config) []leaf {
	var out []leaf
	root := reflect.ValueOf(cfg).Elem()
	leaves(root.Type(), "", func() reflect.Value { return root }, map[reflect.Type]bool{}, &out)
	names := make([]string, 0, len(cfg.Connectors))
	for name := range cfg.Connectors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := cfg.Connectors[name]
		if c == nil || c.Options == nil {
			continue
		}
		ov := reflect.ValueOf(c.Options)
		if ov.Kind() != reflect.Pointer || ov.IsNil() || ov.Elem().Kind() != reflect.Struct {
			continue
		}
		elem := ov.Elem()
		leaves(elem.Type(), joinPath("connectors", name), func() reflect.Value { return elem }, map[reflect.Type]bool{}, &out)
	}
	return out
}

// overrides is what the environment changed.
type overrides struct {
	set   map[string]string    // path → the variable that set it
	files map[string]secretRef // secret path → its <key>_file from the environment
}

// applyEnv overrides cfg's scalar keys from PHONEBRIDGE_* variables. Viper
// only looks the variables up, for paths computed here: the document never
// goes through viper's maps, which would lowercase connector names.
func (d *decoder) applyEnv(cfg *Config, ls []leaf) overrides {
	ov := overrides{set: map[string]string{}, files: map[string]secretRef{}}
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(envReplacer)
	// Two paths can share a variable (connector a-b's key x and connector
	// a's key b_x); such a variable is refused rather than guessed at.
	paths := map[string][]string{}
	for _, l := range ls {
		paths[EnvVar(l.path)] = append(paths[EnvVar(l.path)], l.path)
		_ = v.BindEnv(l.path, EnvVar(l.path))
		if l.secret {
			p := l.path + "_file"
			paths[EnvVar(p)] = append(paths[EnvVar(p)], p)
			_ = v.BindEnv(p, EnvVar(p))
		}
	}
	ambiguous := map[string]bool{}
	lookup := func(path string) (string, bool) {
		name := EnvVar(path)
		if !v.IsSet(path) {
			return "", false
		}
		if ps := paths[name]; len(ps) > 1 {
			if !ambiguous[name] {
				ambiguous[name] = true
				d.problems = append(d.problems, Problem{Env: name,
					Message: "is ambiguous: it could set " + strings.Join(ps, " or ") + "; rename a connector"})
			}
			return "", false
		}
		return v.GetString(path), true
	}
	for _, l := range ls {
		if s, ok := lookup(l.path); ok {
			if msg := setScalar(l.get(), s, l.secret); msg != "" {
				d.problems = append(d.problems, Problem{Path: l.path, Env: EnvVar(l.path), Message: msg})
			} else {
				ov.set[l.path] = EnvVar(l.path)
			}
		}
		if !l.secret {
			continue
		}
		if s, ok := lookup(l.path + "_file"); ok {
			ov.files[l.path] = secretRef{file: s, env: EnvVar(l.path + "_file")}
		}
	}
	return ov
}

// readSecrets fills secret keys given as <key>_file, from the file or the
// environment. The environment wins over the file; giving both the key
// and its _file in one place is a problem. Relative names resolve against
// dir. No message ever includes a secret's value.
func (d *decoder) readSecrets(ls []leaf, ov overrides, dir string) {
	for _, l := range ls {
		if !l.secret {
			continue
		}
		fileRef, inFile := d.secretFiles[l.path]
		envRef, inEnv := ov.files[l.path]
		if !inFile && !inEnv {
			continue
		}
		key := l.path[strings.LastIndexByte(l.path, '.')+1:]
		valueEnv, valueFromEnv := ov.set[l.path]
		var ref secretRef
		switch {
		case inEnv && valueFromEnv:
			d.problems = append(d.problems, Problem{Path: l.path + "_file", Env: envRef.env,
				Message: valueEnv + " is set too; set only one of them"})
			continue
		case inEnv:
			ref = envRef
		case valueFromEnv:
			continue // the variable's value overrides the file's <key>_file
		case d.secretValues[l.path]:
			d.problemAt(fileRef.line, l.path+"_file", "give %s or %s_file, not both", key, key)
			continue
		default:
			ref = fileRef
		}
		fail := func(format string, args ...any) {
			d.problems = append(d.problems, Problem{Path: l.path + "_file", Line: ref.line, Env: ref.env,
				Message: fmt.Sprintf(format, args...)})
		}
		name := strings.TrimSpace(ref.file)
		if name == "" {
			fail("is empty; give the name of a file holding the %s", key)
			continue
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		data, err := readSecretFile(name)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			fail("cannot read %s: %v", name, err)
			continue
		}
		l.get().SetString(strings.TrimRight(string(data), " \t\r\n"))
		if ref.env != "" {
			ov.set[l.path] = ref.env
		}
	}
}

// maxSecretBytes bounds a secret file: a secret is a line, and a name
// such as /dev/zero must not read forever.
const maxSecretBytes = 64 << 10

var errSecretTooLarge = fmt.Errorf("over %d bytes; a secret file holds only the secret", maxSecretBytes)

func readSecretFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSecretBytes {
		return nil, errSecretTooLarge
	}
	return data, nil
}
