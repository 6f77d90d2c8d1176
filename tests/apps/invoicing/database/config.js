// Sequelize's own defaults: applied migrations are recorded in "SequelizeMeta".
const settings = { use_env_variable: "DATABASE_URL", dialect: "postgres", logging: false };
module.exports = { production: settings, development: settings };
