package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/inspect"
	"github.com/octohelm/crpe/internal/parts"
	"github.com/octohelm/crpe/internal/sigverify"
)

func newInspectCmd(g *globals) *cobra.Command {
	var verify, asJSON bool
	var keyFiles []string
	cmd := &cobra.Command{
		Use:   "inspect FILE | PARTS...",
		Short: "Show what a kubepkg.tgz holds, and verify it",
		Long: `crpe inspect reads a kubepkg.tgz in one pass (every blob is hashed as it
streams) and prints its packages, versions, images with digests and platforms,
and its blob count and bytes. --verify also checks that every image is complete
for the package's platforms and that spec.images and index.json agree; blobs a
partial archive (octohelm.tech/partial) leaves out on purpose are listed as
expected, not as damage. Exits 1 on any problem, naming it.

A split archive (crpe export --split) is read from its parts file, its first
part, or all its parts, as one stream: a missing part or one of the wrong
size is refused before the first byte is read, a corrupt or misplaced part by
its digest at its end, each naming the part.`,
		Example: `  crpe inspect demo-0.0.1.kubepkg.tgz
  crpe inspect demo-0.0.1.kubepkg.tgz --verify --json
  curl -s https://pocket/api/v1/kubepkgs/demo/kubepkg.tgz | crpe inspect - --verify
  crpe inspect /media/usb/demo-0.0.1.kubepkg.tgz.parts --verify
  crpe inspect demo-0.0.1.kubepkg.tgz --verify --key site.pub`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			name := args[0]
			var src io.ReadCloser
			if len(args) > 1 || args[0] != "-" {
				set, err := parts.Resolve(args...)
				if err != nil {
					return err
				}
				if src, err = set.Open(); err != nil {
					return err
				}
				defer src.Close()
				in, name = src, set.Name
			}
			o := inspect.Options{Verify: verify}
			for _, f := range keyFiles {
				k, err := sigverify.LoadKey(f)
				if err != nil {
					return err
				}
				o.Keys = append(o.Keys, k)
			}
			rep, err := inspect.Read(cmd.Context(), in, o)
			if err != nil {
				return fmt.Errorf("%s: %w", name, explainPart(src, err))
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Packages {
					ns := p.Namespace
					if ns == "" {
						ns = "-"
					}
					fmt.Fprintf(out, "package\t%s/%s\t%s\t%s\n", ns, p.Name, p.Version, strings.Join(p.Platforms, ","))
				}
				for _, im := range rep.Images {
					fmt.Fprintf(out, "image\t%s\t%s\t%s\n", im.Ref, im.Digest, strings.Join(im.Platforms, ","))
				}
				if ps := rep.PackageSignature; ps != nil && ps.Verified {
					fmt.Fprintf(out, "signed\tpackage\t%s\t%s\n", ps.Key, ps.KeyName)
				}
				for _, v := range rep.Signatures {
					if v.Verified {
						fmt.Fprintf(out, "signed\t%s\t%s\t%s\n", v.Image, v.Key, v.KeyName)
					} else {
						fmt.Fprintf(out, "unsigned\t%s\t%s\n", v.Image, v.Reason)
					}
				}
				for _, a := range rep.Artifacts {
					fmt.Fprintf(out, "%s\t%s\t%s\tof %s\n", a.Kind, a.Ref, a.Digest, a.Subject)
				}
				fmt.Fprintf(out, "blobs\t%d\t%s\n", rep.Blobs, humanBytes(rep.Bytes))
				for _, a := range rep.Absent {
					fmt.Fprintf(out, "absent\t%s\t(partial archive: expected)\n", a)
				}
				for _, p := range rep.Problems {
					fmt.Fprintf(out, "PROBLEM\t%s\n", p)
				}
			}
			if len(rep.Problems) > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("%s: %d problems", name, len(rep.Problems))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&verify, "verify", false, "check every image's closure for its platforms")
	cmd.Flags().StringArrayVar(&keyFiles, "key", nil, "a cosign public key: check the package's signature (kubepkg.json.sig) and the images' (repeatable: any one of them)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
