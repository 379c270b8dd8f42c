// A forkserver preload module for examples/forkserver-warm.ts: importing it loads the
// TypeScript compiler *and* runs it once, so that the functions a worker will call are already
// compiled in the forkserver (V8 compiles a function the first time it runs; a forked worker
// inherits what is compiled, and would otherwise compile it again in every worker).
import * as ts from 'typescript';

ts.transpileModule('const warm: number = 1;', {});
