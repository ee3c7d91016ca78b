// Module boundaries (../shared/docs/style.md §3): checked on every `npm test` (pretest).
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'src-is-shared-kernel', severity: 'error', comment: 'src/ imports neither bots/ nor worker/',
      from: { path: '^src/' }, to: { path: '^(bots|worker)/' } },
    { name: 'bots-not-worker', severity: 'error', comment: 'bots never import worker/ or onnxruntime-node',
      from: { path: '^bots/' }, to: { path: '^worker/|onnxruntime-node' } },
    { name: 'bot-image-has-no-model-libs', severity: 'error',
      comment: 'docker/Dockerfile.bot deletes the model-only packages from the bot image: bots/ and src/ must not import them',
      from: { path: '^(bots|src)/' }, to: { path: 'node_modules/(onnxruntime-node|onnxruntime-common|onnx-proto|@huggingface)/' } },
    { name: 'bots-core-platform-free', severity: 'error', comment: 'bots/core never imports a platform SDK',
      from: { path: '^bots/(core|cli)/' }, to: { path: 'node_modules/(discord\\.js|@discordjs|@slack)/' } },
    { name: 'worker-not-bots', severity: 'error', comment: 'worker never imports bots/, discord.js or @slack/bolt',
      from: { path: '^worker/' }, to: { path: '^bots/|node_modules/(discord\\.js|@discordjs|@slack)/' } },
    { name: 'only-session-imports-ort', severity: 'error', comment: 'only worker/runtime/session.ts imports onnxruntime-node',
      from: { path: '^(worker|src)/', pathNot: '^worker/runtime/session\\.ts$' }, to: { path: 'onnxruntime-node' } },
    { name: 'architectures-not-runtime', severity: 'error', comment: 'architectures build graphs; they never run them',
      from: { path: '^worker/builder/architectures/' }, to: { path: '^worker/runtime/' } },
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
  },
};
