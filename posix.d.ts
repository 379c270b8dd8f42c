// Types of `multiproc/posix` for TypeScript's legacy `moduleResolution: "node"` (node10), which
// ignores package.json `exports`; node16/nodenext/bundler resolve ./dist/posix.d.ts via exports.
export * from './dist/posix';
