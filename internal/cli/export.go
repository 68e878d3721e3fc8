package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/atomicfile"
	"github.com/octohelm/crpe/internal/cosignkey"
	"github.com/octohelm/crpe/internal/export"
	"github.com/octohelm/crpe/internal/kubepkg"
	"github.com/octohelm/crpe/internal/oci"
	"github.com/octohelm/crpe/internal/parts"
	"github.com/octohelm/crpe/internal/pullthrough"
	"github.com/octohelm/crpe/internal/upstream"
)

func newExportCmd(g *globals) *cobra.Command {
	var (
		src, out, data, platforms, sourceToken, since, split string
		artifacts, signKey                                   string
		asJSON, fsync                                        bool
		parallel                                             int
		up                                                   upstreamFlags
	)
	cmd := &cobra.Command{
		Use:   "export -f SRC",
		Short: "Write a package and every image blob it needs into one kubepkg.tgz",
		Long: `crpe export reads a KubePkg or KubePkgList (JSON or YAML, from a file, - for
stdin, or a deployments center URL), resolves each image (a digest in
spec.images is used as is, a tag is resolved), keeps only the chosen platforms
(default: the package's octohelm.tech/platform annotation, else
linux/amd64,linux/arm64), fetches every blob once through the cache in --data
(so a synced pocket exports with no network) and writes the archive.

When a running crpe serve holds --data (the pocket's index is locked), export
asks that pocket instead (it finds it in <data>/pocket.json): the pocket
resolves and fetches through its cache with its registries' settings
(--registry-endpoint, --insecure-registry and --upstream-config of export are
then not used) and streams the archive, the same bytes with the same flags.

The archive is written to a temp file and renamed at the end: a failed export
leaves nothing under the output name. Two exports of the same content are
byte-identical (SOURCE_DATE_EPOCH sets the entries' time). Like cp, tar, crane
or skopeo, export does not fsync the archive (the cache it fills is fsynced):
every byte of an archive is verified when it is read, so a file torn by a
power cut fails loudly. Pass --fsync before unplugging removable media.

--split SIZE cuts the archive into files of at most SIZE bytes for removable
media: OUT.000, OUT.001, … and OUT.parts, which lists each part's name, size
and sha256 (and the whole archive's). The parts concatenated are exactly the
archive export writes without --split. SIZE is bytes or 64MiB, 1GiB, …;
FAT32 holds files of at most 4 GiB less one byte: --split fat32 (a 4GiB part
does not fit). crpe import and crpe inspect take the parts file, the first
part or all the parts.`,
		Example: `  crpe export -f demo.kubepkg.json
  crpe export -f https://center.example/kubepkgs/demo --source-token "$TOKEN" --platform linux/arm64
  crpe export -f demo.yaml -o - --registry-endpoint docker.io=http://127.0.0.1:5000 | ssh gw 'cat > demo.tgz'
  crpe export -f demo.yaml --offline --json
  crpe export -f demo.yaml -o /media/usb/demo.kubepkg.tgz --split fat32 --fsync`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if src == "" {
				return fmt.Errorf("-f is required: a KubePkg file, - for stdin, or a URL")
			}
			var partSize int64
			if split != "" {
				if out == "-" {
					return errors.New("--split writes files (OUT.000, OUT.001, … and OUT.parts): it cannot write to stdout (-o -); give -o FILE")
				}
				var err error
				if partSize, err = parts.ParseSize(split); err != nil {
					return fmt.Errorf("--split: %w", err)
				}
			}
			opts, err := exportOptions(platforms, since, artifacts, parallel)
			if err == nil && signKey != "" {
				var sv signature.SignerVerifier
				if sv, err = cosignkey.Load(signKey, []byte(os.Getenv("COSIGN_PASSWORD"))); err == nil {
					opts.SignPackage = func(b []byte) ([]byte, error) { return cosignkey.SignBlob(sv, b) }
				}
			}
			if err != nil {
				return err
			}
			opts.Warn = func(msg string) { g.log.Warn(msg) }
			uo, err := up.options()
			if err != nil {
				return err
			}
			pkgs, err := kubepkg.Load(ctx, src, kubepkg.LoadOptions{Token: sourceToken, Stdin: cmd.InOrStdin(), CacheDir: filepath.Join(data, "sources")})
			if err != nil {
				return err
			}
			if out == "" {
				out = fmt.Sprintf("%s-%s.kubepkg.tgz", pkgs[0].Metadata.Name, pkgs[0].Spec.Version)
			}
			st, pocket, err := openExportData(ctx, data, g.log)
			if err != nil {
				return err
			}
			if st != nil {
				defer st.Close()
			}
			if pocket != nil && opts.SignPackage != nil {
				return errors.New("--sign-key: a running crpe serve holds --data and streams the archive; signing happens where the archive is written, so stop the pocket (or give another --data) to export a signed package")
			}

			// the archive goes to a temp file renamed at the end, or to temp
			// parts published together at the end, or to stdout
			var w io.Writer = cmd.OutOrStdout()
			var file *atomicfile.File
			var pw *parts.Writer
			switch {
			case partSize > 0:
				if pw, err = parts.Create(out, partSize, fsync); err != nil {
					return err
				}
				defer pw.Abort()
				w = pw
			case out != "-":
				if file, err = atomicfile.Create(out, 0o644); err != nil {
					return err
				}
				defer file.Abort()
				w = file
			}
			var bars *barProgress
			if isTerminal(cmd.ErrOrStderr()) && !asJSON {
				bars = newBarProgress(cmd.ErrOrStderr())
			}
			var res *export.Result
			if pocket != nil {
				for _, name := range []string{"registry-endpoint", "insecure-registry", "upstream-config"} {
					if cmd.Flags().Changed(name) {
						g.log.Warn("the export goes through the running pocket, with its registries' settings: --" + name + " is not used")
					}
				}
				g.log.Info("crpe serve holds the data folder: exporting through it", "pocket", pocket.URL, "pid", pocket.PID)
				res, err = exportThroughPocket(ctx, g, pocket, pkgs, w, opts, up.offline, bars)
			} else {
				cache := pullthrough.New(st.Store, st.DB, upstream.New(uo), pullthrough.Options{Offline: up.offline, OnFallback: pullthrough.LogFallback(g.log)})
				if bars != nil {
					opts.Progress = bars
				}
				res, err = export.Export(ctx, cache, st.Store, pkgs, w, opts)
			}
			if bars != nil {
				bars.done()
			}
			if err != nil {
				return err
			}
			var m *parts.Manifest
			switch {
			case file != nil:
				if err := file.Commit(fsync); err != nil {
					return err
				}
			case pw != nil:
				if m, err = pw.Commit(); err != nil {
					return err
				}
			}
			return printExport(cmd, out, res, m, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&src, "file", "f", "", "package source: file, - (stdin) or http(s) URL")
	f.StringVarP(&out, "output", "o", "", "archive to write, - for stdout (default <name>-<version>.kubepkg.tgz)")
	f.StringVar(&platforms, "platform", "", "platforms to export: os/arch[/variant],... (default: the package's annotation, else "+export.DefaultPlatforms+")")
	f.StringVar(&data, "data", defaultPocketData(), "cache folder (the pocket's --data)")
	f.BoolVar(&fsync, "fsync", false, "fsync the archive before renaming it into place")
	f.StringVar(&split, "split", "", "cut the archive into OUT.000, OUT.001, … of at most this size (bytes, 64MiB, 1GiB, fat32) and OUT.parts")
	f.StringVar(&sourceToken, "source-token", "", "bearer token for a deployments center URL")
	f.IntVar(&parallel, "parallel", 4, "blobs fetched at once")
	f.StringVar(&artifacts, "artifacts", "all", "what is carried with each image: all (its signatures, attestations and SBOMs: OCI referrers and cosign's sha256-<hex>.sig/.att/.sbom tags), none, or kinds and types: signature,sbom,application/spdx+json")
	f.StringVar(&signKey, "sign-key", "", "sign the package with this cosign private key (its password in COSIGN_PASSWORD): kubepkg.json.sig, checked by crpe inspect --verify --key or cosign verify-blob")
	f.StringVar(&since, "since", "", "an agent inventory (crpe agent inventory): leave out the layers it holds")
	f.BoolVar(&asJSON, "json", false, "print a machine-readable summary")
	up.register(cmd)
	return cmd
}

// exportOptions reads the export flags that shape the archive.
func exportOptions(platforms, since, artifacts string, parallel int) (export.Options, error) {
	opts := export.Options{Parallel: parallel, ModTime: time.Unix(0, 0).UTC()}
	var err error
	if opts.Artifacts, err = export.ParseArtifacts(artifacts); err != nil {
		return opts, err
	}
	if platforms != "" {
		var err error
		if opts.Platforms, err = oci.ParsePlatforms(platforms); err != nil {
			return opts, err
		}
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return opts, fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", s)
		}
		opts.ModTime = time.Unix(n, 0).UTC()
	}
	if since != "" {
		b, err := os.ReadFile(since)
		if err != nil {
			return opts, err
		}
		var inv struct {
			Digests []digest.Digest `json:"digests"`
		}
		if err := json.Unmarshal(b, &inv); err != nil {
			return opts, fmt.Errorf("--since %s: not an agent inventory: %w", since, err)
		}
		opts.Exclude = map[digest.Digest]bool{}
		for _, d := range inv.Digests {
			opts.Exclude[d] = true
		}
	}
	return opts, nil
}

// printExport prints an export's summary: JSON (on stderr when the archive
// is on stdout), or one line on stderr.
func printExport(cmd *cobra.Command, out string, res *export.Result, m *parts.Manifest, asJSON bool) error {
	if asJSON {
		if m != nil {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				Output    string          `json:"output"`
				PartsFile string          `json:"partsFile"`
				Parts     *parts.Manifest `json:"parts"`
				*export.Result
			}{out, out + parts.FileSuffix, m, res})
		}
		w := cmd.OutOrStdout()
		if out == "-" {
			w = cmd.ErrOrStderr()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Output string `json:"output"`
			*export.Result
		}{out, res})
	}
	if out == "-" {
		return nil
	}
	var names []string
	for _, p := range res.Packages {
		names = append(names, p.Name+"@"+p.Version)
	}
	if m != nil {
		out = fmt.Sprintf("%s (%d parts, %s)", out+parts.FileSuffix, len(m.Parts), humanBytes(m.Archive.Size))
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %s, %d images, %d blobs, %s\n", out, strings.Join(names, ", "), len(res.Images), res.Blobs, humanBytes(res.Bytes))
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
